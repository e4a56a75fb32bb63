// Marketing and analytics: the RFM quintile distributions as a heatmap and
// the segment sizes as bars, both SVG, each cell and bar labelled with its
// number so nothing depends on colour alone; lifetime value figures.
import { getJson, postJson } from './api.js';
import { h, s, replace, facts, errorBox, when, field, select, table } from './dom.js';

function heatmap(dist) {
  const rows = [['Recency', dist.recency], ['Frequency', dist.frequency], ['Monetary', dist.monetary]];
  const max = Math.max(1, ...rows.flatMap(([, d]) => Object.values(d)));
  const cw = 64, ch = 40, left = 90, top = 24;
  const svg = s('svg', {
    viewBox: `0 0 ${left + 5 * cw} ${top + 3 * ch}`, role: 'img', class: 'chart', id: 'rfm-heatmap',
    'aria-label': 'Subjects per RFM quintile (1 lowest, 5 highest)',
  });
  for (let q = 1; q <= 5; q++)
    svg.append(s('text', { x: left + (q - 0.5) * cw, y: 16, 'text-anchor': 'middle', class: 'axis' }, `Q${q}`));
  rows.forEach(([name, d], r) => {
    svg.append(s('text', { x: 4, y: top + r * ch + ch / 2 + 5, class: 'axis' }, name));
    for (let q = 1; q <= 5; q++) {
      const n = d[String(q)] || 0;
      const shade = 0.1 + 0.85 * (n / max);
      svg.append(s('rect', {
        x: left + (q - 1) * cw + 1, y: top + r * ch + 1, width: cw - 2, height: ch - 2,
        class: 'cell', 'fill-opacity': shade.toFixed(3),
      }, s('title', null, `${name} quintile ${q}: ${n} subjects`)));
      svg.append(s('text', {
        x: left + (q - 0.5) * cw, y: top + r * ch + ch / 2 + 5, 'text-anchor': 'middle',
        class: shade > 0.55 ? 'cell-label dark' : 'cell-label',
      }, String(n)));
    }
  });
  return svg;
}

function bars(segments) {
  const entries = Object.entries(segments).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const bh = 26, left = 170, width = 300;
  const svg = s('svg', {
    viewBox: `0 0 ${left + width + 70} ${Math.max(1, entries.length) * bh + 4}`, role: 'img', class: 'chart',
    id: 'segment-bars', 'aria-label': 'Subjects per segment',
  });
  entries.forEach(([name, n], i) => {
    const w = Math.max(1, (n / max) * width);
    svg.append(s('text', { x: 4, y: i * bh + 18, class: 'axis' }, name.replaceAll('_', ' ')));
    svg.append(s('rect', { x: left, y: i * bh + 4, width: w, height: bh - 8, class: 'bar' },
      s('title', null, `${name}: ${n}`)));
    svg.append(s('text', { x: left + w + 6, y: i * bh + 18, class: 'axis' }, String(n)));
  });
  return svg;
}

// Marketing purposes and their channels as shipped (policies/purposes.yaml),
// to offer the campaign preview's choices; the server checks every one.
export const MARKETING = {
  email_marketing: ['email'], sms_marketing: ['sms'], phone_marketing: ['phone'], postal_marketing: ['post'],
  push_marketing: ['push'], personalisation: ['web'], partner_sharing: ['email', 'sms', 'phone', 'post', 'push', 'web'],
  targeted_advertising: ['web', 'push', 'email'],
};

// A role sees this screen with `analytics`, or as a marketer (records.read
// and a marketing purpose: the campaign preview).
export function marketer(me) {
  return me.operations.includes('records.read') && me.purposes.some((p) => p in MARKETING);
}

const pct = (r) => `${(r * 100).toFixed(r > 0 && r < 0.1 ? 1 : 0)}%`;

// A sparkline of one series' rate (0-100 %), its last value written beside it.
function sparkline(points, label) {
  const w = 120, hgt = 28, n = points.length;
  const xy = points.map((p, i) => `${n === 1 ? w / 2 : (i * w) / (n - 1)},${hgt - 2 - p.rate * (hgt - 4)}`);
  return s('svg', { viewBox: `0 0 ${w + 44} ${hgt}`, class: 'spark', role: 'img', 'aria-label': `${label}: ${points.map((p) => `${p.month} ${pct(p.rate)}`).join(', ')}` },
    s('polyline', { points: xy.join(' '), class: 'spark-line' }),
    s('text', { x: w + 4, y: hgt / 2 + 4, class: 'axis' }, pct(points[n - 1].rate)));
}

async function consentSection(box) {
  try {
    const doc = await getJson('/v1/analytics/consents?months=6');
    const rows = doc.series.map((sr) => {
      const label = `${sr.purpose.replaceAll('_', ' ')} · ${sr.channel}`;
      return h('tr', { 'data-series': `${sr.purpose}/${sr.channel}` }, h('th', { scope: 'row' }, label),
        h('td', null, sparkline(sr.points, label)),
        sr.points.map((p) => h('td', { class: 'num' }, `${p.granted} (${pct(p.rate)})`)));
    });
    replace(box, h('h2', null, 'Consent rates over time'),
      h('p', { class: 'hint' }, 'Subjects granted per purpose and channel at each month\'s end, and the share of active subjects.'),
      table(['Purpose · channel', 'Trend', ...doc.months], rows, { id: 'consent-rates' }));
  } catch (e) {
    replace(box, h('h2', null, 'Consent rates over time'), errorBox(e));
  }
}

function previewSection(box, me) {
  const purposes = me.purposes.filter((p) => p in MARKETING);
  const purpose = select('purpose', purposes.map((p) => [p, p.replaceAll('_', ' ')]), purposes[0]);
  const channel = h('select', { name: 'channel' });
  const fillChannels = () => replace(channel, MARKETING[purpose.value].map((c) => h('option', { value: c }, c)));
  purpose.addEventListener('change', fillChannels);
  fillChannels();
  const segment = h('input', { name: 'segment', autocomplete: 'off', placeholder: 'any' });
  const out = h('div', { id: 'preview-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'filters', id: 'campaign-preview', 'aria-label': 'Campaign preview' },
    field('Purpose', purpose), field('Channel', channel), field('Segment (optional)', segment),
    h('button', { type: 'submit' }, 'Count recipients'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { channel: channel.value };
    if (segment.value.trim()) body.segment = segment.value.trim();
    try {
      const r = await postJson('/v1/campaigns:preview', body, { purpose: purpose.value });
      replace(out, h('p', { class: 'summary' }, h('strong', { id: 'preview-count' }, String(r.count)),
        ` subject${r.count === 1 ? '' : 's'} would receive ${r.purpose.replaceAll('_', ' ')} by ${r.channel}${r.segment ? ` in ${r.segment}` : ''} (a count only; no one is read).`));
    } catch (e) {
      replace(out, errorBox(e));
    }
  });
  replace(box, h('h2', null, 'Campaign preview'), form, out);
}

export async function renderAnalytics(main, me) {
  const canAnalyse = me.operations.includes('analytics');
  const preview = h('section', { id: 'preview' });
  if (marketer(me)) previewSection(preview, me);
  if (!canAnalyse) {
    replace(main, h('h1', null, 'Marketing'), preview);
    return;
  }
  const consents = h('section', { id: 'consents' });
  const consentsLoaded = consentSection(consents);
  await renderRfm(main);
  main.append(consents, preview);
  await consentsLoaded;
}

// An amount in minor units shown in its currency (JPY has none, EUR two, ...).
function inCurrency(minor, currency) {
  try {
    const f = new Intl.NumberFormat('en', { style: 'currency', currency });
    return f.format(minor / 10 ** f.resolvedOptions().maximumFractionDigits);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
}

async function renderRfm(main) {
  replace(main, h('h1', null, 'Marketing and analytics'), h('p', { 'aria-busy': 'true' }, 'Loading…'));
  try {
    const a = await getJson('/v1/analytics/rfm', { purpose: 'analytics' });
    const money = (minor) => (minor / 100).toFixed(2);
    replace(main, h('h1', null, 'Marketing and analytics'),
      facts([['Computed', when(a.computed_at)], ['Window', `${a.window_days} days`],
        ['Subjects scored', String(a.subjects_scored)], ['Orders considered', String(a.orders_considered)]]),
      h('h2', null, 'RFM quintiles'), h('figure', null, heatmap(a.distribution),
        h('figcaption', null, 'Subjects per quintile of recency, frequency and monetary value; the number is in each cell.')),
      h('h2', null, 'Segments'), h('figure', null, bars(a.segments || {}),
        h('figcaption', null, 'Subjects per segment (policies/segments.yaml), largest first.')),
      h('h2', null, 'Lifetime value per currency'),
      table(['Currency', 'Customers', 'Orders', 'Revenue in window', 'Average CLV'], (a.clv_by_currency || []).map((c) =>
        h('tr', { 'data-currency': c.currency }, h('th', { scope: 'row' }, c.currency), h('td', { class: 'num' }, String(c.customers)),
          h('td', { class: 'num' }, String(c.orders)), h('td', { class: 'num' }, inCurrency(c.revenue_minor, c.currency)),
          h('td', { class: 'num' }, inCurrency(c.average_clv_minor, c.currency)))), { id: 'clv-currency' }),
      h('h2', null, 'Lifetime value (all currencies, as policies/segments.yaml computes it)'),
      facts([['Average CLV', money(a.clv.average_minor)], ['Expected lifespan', `${a.clv.expected_lifespan_years} years`],
        ['Customer equity', money(a.clv.customer_equity_minor)]]));
  } catch (e) {
    replace(main, h('h1', null, 'Marketing and analytics'), errorBox(e));
  }
}
