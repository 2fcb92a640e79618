// Charts over the vendored uPlot (window.uPlot): time series with axes in the viewer's
// time zone and values in their unit, sparklines for tables, and a range picker.

import { h, fmt } from './dom.js';

const COLOURS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2'];

/**
 * A time-series chart in `parent`: {title, unit, labels: [series names], height}.
 * Returns {set(data, [from, to]), el}; data is [times, ...values], the x axis spans
 * from..to (unix seconds; the data's own span without). Resizes with its container.
 */
export function chart(parent, { title, unit, labels, height = 180, threshold }) {
  const el = h('figure', { class: 'chart', role: 'img', 'aria-label': `${title} (${unit})` });
  parent.append(el);
  const series = [{}].concat(
    labels.map((label, i) => ({
      label,
      stroke: COLOURS[i % COLOURS.length],
      width: 2,
      spanGaps: false,
      // Dots as well as lines: a lone value between gaps (a quiet route) stays visible.
      points: { show: true, size: 4, fill: COLOURS[i % COLOURS.length] },
      value: (u, v) => fmt(v, unit),
    })),
  );
  if (threshold !== undefined) {
    series.push({ label: 'threshold', stroke: '#dc2626', dash: [6, 4], width: 1, value: (u, v) => fmt(v, unit) });
  }
  const opts = {
    title: `${title} (${unit})`,
    width: Math.max(el.clientWidth || parent.clientWidth || 320, 240),
    height,
    series,
    scales: { x: { time: true, range: (u, min, max) => span || [min, max] }, y: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(max ?? 1, unit === '%' ? 0.01 : 1)] } },
    axes: [
      { stroke: '#64748b', grid: { stroke: '#e2e8f0' } },
      { stroke: '#64748b', grid: { stroke: '#e2e8f0' }, size: 70, values: (u, vals) => vals.map((v) => fmt(v, unit)) },
    ],
    legend: { live: true },
  };
  let span;
  const blank = [[]].concat(series.slice(1).map(() => []));
  const plot = new window.uPlot(opts, blank, el);
  new ResizeObserver(() => {
    const w = Math.max(el.clientWidth, 240);
    if (w !== plot.width) plot.setSize({ width: w, height });
  }).observe(el);
  return {
    el,
    set(data, range) {
      span = range;
      if (threshold !== undefined) data = data.concat([data[0].map(() => threshold)]);
      plot.setData(data);
      el.dataset.points = String(data[0].length);
      el.dataset.total = String((data[1] || []).reduce((a, v) => a + (v || 0), 0));
    },
  };
}

/** A small line without axes for a table cell: data [times, values]. */
export function sparkline(data, unit) {
  const el = h('span', { class: 'spark', role: 'img', 'aria-label': `trend over the last hour (${unit})` });
  const opts = {
    width: 120,
    height: 28,
    pxAlign: false,
    cursor: { show: false },
    legend: { show: false },
    select: { show: false },
    scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(max ?? 1, 1e-9)] } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: COLOURS[0], width: 1.5, fill: 'rgba(37,99,235,0.12)' }],
  };
  // Drawn once the cell is in the document (uPlot measures it).
  requestAnimationFrame(() => new window.uPlot(opts, [data[0], data[1].map((v) => v ?? 0)], el));
  return el;
}

export const RANGES = [
  ['15m', 900],
  ['1h', 3600],
  ['6h', 6 * 3600],
  ['24h', 24 * 3600],
  ['7d', 7 * 24 * 3600],
  ['30d', 30 * 24 * 3600],
];

/** A range picker; calls onChange(seconds) now and on each change. Remembers the choice. */
export function rangePicker(onChange) {
  const saved = Number(sessionStorage.getItem('ferrogate.range')) || 3600;
  const select = h(
    'select',
    {
      id: 'range',
      onchange: () => {
        sessionStorage.setItem('ferrogate.range', select.value);
        onChange(Number(select.value));
      },
    },
    RANGES.map(([label, s]) => h('option', { value: String(s), selected: s === saved }, `last ${label}`)),
  );
  queueMicrotask(() => onChange(Number(select.value)));
  return h('label', { class: 'range' }, 'Range ', select);
}

/** The step for a range: 10 s points up to two hours, then minutes, at most ~720 points. */
export function stepFor(seconds) {
  if (seconds <= 7200) return 10;
  return Math.max(60, Math.ceil(seconds / 720 / 60) * 60);
}
