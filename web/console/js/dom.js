// DOM building without HTML strings. Every value becomes a text node or an
// attribute value, so a personal value (a name like
// `<img src=x onerror=alert(1)>`) is shown as the characters it is and never
// parsed as markup. The page's CSP (require-trusted-types-for 'script',
// trusted-types 'none') makes innerHTML and friends throw, so this is the
// only way in.

function put(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  put(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  put(el, children);
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  put(el, children);
  return el;
}

// A labelled form control: <label>text <input id=…></label>.
let nextId = 0;
export function field(labelText, control) {
  if (!control.id) control.id = `f${++nextId}`;
  return h('div', { class: 'field' }, h('label', { for: control.id }, labelText), control);
}

export function select(name, options, value) {
  return h('select', { name },
    options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
}

// A definition list of [term, value] pairs; null values are skipped.
export function facts(pairs) {
  return h('dl', { class: 'facts' },
    pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
      .map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

export function table(headers, rows, attrs = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', attrs,
      h('thead', null, h('tr', null, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows)));
}

export function errorBox(err) {
  const code = err && err.code ? ` (${err.code})` : '';
  return h('p', { class: 'error', role: 'alert' }, `${err && err.message ? err.message : err}${code}`);
}

// "2 d 03:04:05" for a duration in milliseconds (absolute value).
export function duration(ms) {
  let t = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(t / 86400); t -= d * 86400;
  const hh = Math.floor(t / 3600); t -= hh * 3600;
  const mm = Math.floor(t / 60); const ss = t - mm * 60;
  const p = (n) => String(n).padStart(2, '0');
  return `${d ? `${d} d ` : ''}${p(hh)}:${p(mm)}:${p(ss)}`;
}

export function when(iso) {
  if (!iso) return '';
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
