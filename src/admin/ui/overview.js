// The overview: the last second's traffic, live (one event a second from /stats/live),
// the last two minutes of it as charts, and the gateway's history over a chosen range.

import { stream, series, now, ApiError } from './api.js';
import { h, section, empty, failure, fmt, table, link } from './dom.js';
import { chart, rangePicker, stepFor } from './chart.js';

const KEEP = 120;

/** Explains a /stats or /stats/live refusal: the history is off, or something else. */
export function historyProblem(err) {
  if (err instanceof ApiError && err.status === 404) {
    return empty(
      'The traffic history is off',
      'Live numbers and charts read the history. Add a `history: {}` section to the configuration ' +
        '(with `data_dir` to keep it across restarts) and reload.',
    );
  }
  return failure('The history could not be read', err);
}

export function render(main, _params, signal) {
  const tiles = {
    rps: tile('Requests', 'req/s', 'live-rps'),
    error_ratio: tile('5xx ratio', '%', 'live-errors'),
    p50: tile('p50 latency', 'ms', 'live-p50'),
    p95: tile('p95 latency', 'ms', 'live-p95'),
    p99: tile('p99 latency', 'ms', 'live-p99'),
    bytes_out: tile('Bytes out', 'B/s', 'live-bytes'),
  };
  const state = h('span', { class: 'live-state', id: 'live-state', 'aria-live': 'polite' }, 'connecting…');
  const liveCard = section('Live', state, h('div', { class: 'tiles' }, Object.values(tiles).map((t) => t.el)));
  const liveCharts = h('div', { class: 'grid' });
  const routesBox = h('div', {}, empty('No traffic yet', 'Routes appear here as soon as they answer requests.'));
  main.append(
    h('h1', {}, 'Overview'),
    liveCard,
    liveCharts,
    section('Routes now', routesBox),
  );
  const charts = [
    chart(liveCharts, { title: 'Requests, live', unit: 'req/s', labels: ['requests'] }),
    chart(liveCharts, { title: '5xx ratio, live', unit: '%', labels: ['5xx'] }),
    chart(liveCharts, { title: 'Latency, live', unit: 'ms', labels: ['p50', 'p95', 'p99'] }),
    chart(liveCharts, { title: 'Bytes, live', unit: 'B/s', labels: ['in', 'out'] }),
  ];
  const data = { t: [], rps: [], err: [], p50: [], p95: [], p99: [], bin: [], bout: [] };
  const onEvent = (e) => {
    const g = e.gateway;
    for (const [k, t] of Object.entries(tiles)) t.set(g[k]);
    const push = (k, v) => { data[k].push(v); if (data[k].length > KEEP) data[k].shift(); };
    push('t', e.t); push('rps', g.rps); push('err', g.error_ratio); push('p50', g.p50);
    push('p95', g.p95); push('p99', g.p99); push('bin', g.bytes_in); push('bout', g.bytes_out);
    const span = [e.t - KEEP, e.t];
    charts[0].set([data.t, data.rps], span);
    charts[1].set([data.t, data.err], span);
    charts[2].set([data.t, data.p50, data.p95, data.p99], span);
    charts[3].set([data.t, data.bin, data.bout], span);
    const routes = Object.entries(e.routes).map(([name, r]) => ({ name, ...r }));
    routesBox.replaceChildren(
      table(
        [
          { label: 'Route', cell: (r) => (r.name === 'other' ? 'other' : link(`/routes/${encodeURIComponent(r.name)}`, r.name)) },
          { label: 'Requests', num: true, cell: (r) => fmt(r.rps, 'req/s') },
          { label: '5xx', num: true, cell: (r) => fmt(r.error_ratio, '%') },
          { label: 'p95', num: true, cell: (r) => fmt(r.p95, 'ms') },
          { label: 'p99', num: true, cell: (r) => fmt(r.p99, 'ms') },
        ],
        routes.sort((a, b) => b.rps - a.rps),
        empty('No traffic in the last second', 'Routes appear here while they answer requests.'),
      ),
    );
  };
  stream('/stats/live', onEvent, signal, (s) => {
    if (s === 'open') state.textContent = 'live, every second';
    else if (s === 'retrying') state.textContent = 'reconnecting…';
    else liveCard.replaceChildren(h('h2', {}, 'Live'), historyProblem(s));
  });
  historyCharts(main, { dimension: 'gateway', name: '' }, 'Gateway history', signal);
}

/** Range-picked history charts of one scope, appended to `parent`. */
export function historyCharts(parent, scope, title, signal) {
  const body = h('div', { class: 'grid' });
  const card = section(title, h('div', { class: 'toolbar' }, rangePicker(draw)), body);
  parent.append(card);
  let charts;
  async function draw(seconds) {
    const to = now();
    const from = to - seconds;
    const step = stepFor(seconds);
    if (!charts) {
      charts = [
        chart(body, { title: 'Requests', unit: 'req/s', labels: ['requests'] }),
        chart(body, { title: '5xx ratio', unit: '%', labels: ['5xx'] }),
        chart(body, { title: 'Latency', unit: 'ms', labels: ['p50', 'p95', 'p99'] }),
        chart(body, { title: 'Bytes', unit: 'B/s', labels: ['in', 'out'] }),
      ];
      charts.forEach((c, i) => (c.el.id = `history-${['rps', 'errors', 'latency', 'bytes'][i]}`));
    }
    try {
      const [rps, err, lat, bytes] = await Promise.all([
        series(['rps'], scope, from, to, step),
        series(['error_ratio'], scope, from, to, step),
        series(['p50', 'p95', 'p99'], scope, from, to, step),
        series(['bytes_in', 'bytes_out'], scope, from, to, step),
      ]);
      if (signal.aborted) return;
      const perSecond = (d) => [d[0], ...d.slice(1).map((s) => s.map((v) => (v === null ? null : v / step)))];
      const span = [from, to];
      charts[0].set(rps, span);
      charts[1].set(err, span);
      charts[2].set(lat, span);
      charts[3].set(perSecond(bytes), span);
      card.dataset.drawn = 'true';
    } catch (e) {
      body.replaceChildren(historyProblem(e));
      charts = undefined;
    }
  }
  return card;
}

function tile(label, unit, id) {
  const value = h('span', { class: 'value', id }, '–');
  return {
    el: h('div', { class: 'tile' }, h('span', { class: 'label' }, label), value),
    set: (v) => {
      value.textContent = fmt(v, unit);
      value.dataset.value = v === null || v === undefined ? '' : String(v);
    },
  };
}
