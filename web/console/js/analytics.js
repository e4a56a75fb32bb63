// Marketing and analytics: the RFM quintile distributions as a heatmap and
// the segment sizes as bars, both SVG, each cell and bar labelled with its
// number so nothing depends on colour alone; lifetime value figures.
import { getJson } from './api.js';
import { h, s, replace, facts, errorBox, when } from './dom.js';

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

export async function renderAnalytics(main) {
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
      h('h2', null, 'Lifetime value'),
      facts([['Average CLV', money(a.clv.average_minor)], ['Expected lifespan', `${a.clv.expected_lifespan_years} years`],
        ['Customer equity', money(a.clv.customer_equity_minor)]]));
  } catch (e) {
    replace(main, h('h1', null, 'Marketing and analytics'), errorBox(e));
  }
}
