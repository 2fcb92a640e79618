// Small helpers to build the pages' elements and to write numbers, times and states.

/** An element: h('a', {href: '#/'}, 'text', child…). Attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A section with a heading. */
export const section = (title, ...children) =>
  h('section', { class: 'card' }, h('h2', {}, title), ...children);

/** An empty state that says why there is nothing and what to do. */
export const empty = (what, why) => h('div', { class: 'empty', role: 'status' }, h('strong', {}, what), h('p', {}, why));

/** An error box for a refused or failed API call. */
export function failure(what, err) {
  const box = h('div', { class: 'error', role: 'alert' }, h('strong', {}, what));
  box.append(h('p', {}, err.status ? `${err.status}: ${err.message}` : String(err.message || err)));
  return box;
}

/** A table: columns [{label, cell(row) → node|text, num}], rows; empty state when no rows. */
export function table(columns, rows, emptyState) {
  if (!rows.length) return emptyState;
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : '' }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.cell(r)))))),
    ),
  );
}

const SI = ['', 'k', 'M', 'G', 'T'];

/** A number with its unit: 'req/s', 'ms', '%' (of a ratio), 'B', 'B/s'. */
export function fmt(v, unit = '') {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (unit === '%') return `${(v * 100).toFixed(v < 0.1 ? 2 : 1)} %`;
  if (unit === 'ms') return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 2 : 0)} ms`;
  if (unit === 'B' || unit === 'B/s') {
    let i = 0;
    while (Math.abs(v) >= 1024 && i < SI.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(i ? 1 : 0)} ${SI[i]}${i ? 'i' : ''}${unit}`;
  }
  let i = 0;
  while (Math.abs(v) >= 1000 && i < SI.length - 1) { v /= 1000; i++; }
  const digits = Number.isInteger(v) ? 0 : v < 10 ? 2 : 1;
  return `${v.toFixed(digits)}${SI[i]}${unit ? ' ' + unit : ''}`;
}

/** A unix time (seconds) or an RFC 3339 time, in the viewer's time zone. */
export function time(t) {
  if (!t) return '–';
  const d = new Date(typeof t === 'number' ? t * 1000 : t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

/** A badge for a state word (healthy, open, firing…), coloured by its meaning. */
export function badge(text, tone) {
  return h('span', { class: `badge ${tone || toneOf(text)}` }, text);
}

function toneOf(s) {
  if (['healthy', 'closed', 'ready', 'resolved', 'ok'].includes(s)) return 'good';
  if (['draining', 'half_open', 'pending', 'warning', 'ejected'].includes(s)) return 'warn';
  if (['unhealthy', 'open', 'firing', 'critical'].includes(s)) return 'bad';
  return '';
}

/** A link to a page of the dashboard. */
export const link = (path, text) => h('a', { href: `#${path}` }, text);

/** Percent-encodes one path segment. */
export const seg = (s) => encodeURIComponent(s);
