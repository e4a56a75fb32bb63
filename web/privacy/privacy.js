// The data subject's privacy page. A subject arrives through a single-use,
// expiring link their CRM sends (design: docs/console.md, "Privacy page");
// the link's token travels in the URL fragment, which the browser never
// sends to a server or in a Referer, and is dropped from the address bar at
// once. Until the link API exists, the page shows the Global Privacy
// Control state it would honour and says that no link is active.
const gpcOn = navigator.globalPrivacyControl === true;
const gpc = document.getElementById('gpc');
gpc.textContent = gpcOn
  ? 'Your browser sends Global Privacy Control (Sec-GPC: 1): we treat it as an opt-out of sale and sharing.'
  : 'Your browser does not send a Global Privacy Control signal.';
if (gpcOn) gpc.className = 'on';

const hadLink = location.hash.length > 1;
if (hadLink) history.replaceState(null, '', location.pathname);
document.getElementById('link').textContent = hadLink
  ? 'This privacy link cannot be used here yet. Please contact us through the address in our privacy notice.'
  : 'Open this page through the link in the e-mail we sent you to see and change your choices.';
