// Routes, upstreams and consumers: tables with the last hour's numbers and a sparkline per
// item, and a page per item with its history charts and its configuration; an upstream's
// page also shows each target's health, circuit, requests in flight and a drain button.

import { api, series, now, ApiError } from './api.js';
import { h, section, empty, failure, fmt, table, link, seg, badge } from './dom.js';
import { sparkline } from './chart.js';
import { historyCharts } from './overview.js';

const HOUR = 3600;

/** name → {requests, error_ratio, p99} of a dimension over the last hour (empty without history). */
async function lastHour(dimension) {
  const to = now();
  const q = (metric) => api(`/stats/top?dimension=${dimension}&metric=${metric}&n=1000&from=${to - HOUR}&to=${to}`);
  try {
    const [req, err, p99] = await Promise.all([q('requests'), q('error_ratio'), q('p99')]);
    const out = {};
    for (const [k, list] of [['requests', req], ['error_ratio', err], ['p99', p99]]) {
      for (const row of list.top) (out[row.name] ||= {})[k] = row.value;
    }
    return out;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

/** A cell with the last hour's requests per second of one scope, drawn when it arrives. */
function spark(dimension, name) {
  const cell = h('span', { class: 'spark-cell' });
  const to = now();
  series(['rps'], { dimension, name }, to - HOUR, to, 60)
    .then((d) => cell.append(sparkline(d, 'req/s')))
    .catch(() => cell.append('–'));
  return cell;
}

const numbers = (stats, key) => [
  { label: 'Requests (1 h)', num: true, cell: (r) => fmt(stats?.[key(r)]?.requests ?? (stats ? 0 : null)) },
  { label: '5xx', num: true, cell: (r) => fmt(stats?.[key(r)]?.error_ratio, '%') },
  { label: 'p99', num: true, cell: (r) => fmt(stats?.[key(r)]?.p99, 'ms') },
];

const noHistory = (stats) =>
  stats ? [] : [h('p', { class: 'note' }, 'The traffic history is off: numbers and sparklines need a `history` section.')];

export async function routes(main) {
  main.append(h('h1', {}, 'Routes'));
  const [list, stats] = await Promise.all([api('/config/routes'), lastHour('route')]);
  const cols = [
    { label: 'Route', cell: (r) => link(`/routes/${seg(r.name)}`, r.name) },
    { label: 'Match', cell: (r) => matchText(r.match) },
    { label: 'Upstream', cell: (r) => (r.upstream ? link(`/upstreams/${seg(r.upstream)}`, r.upstream) : r.redirect ? 'redirect' : '–') },
    ...numbers(stats, (r) => r.name),
    { label: 'Last hour', cell: (r) => (stats ? spark('route', r.name) : '–') },
  ];
  main.append(
    section(
      `${list.length} route${list.length === 1 ? '' : 's'}`,
      ...noHistory(stats),
      table(cols, list, empty('No routes', 'Add one in the file, or on the Configuration page (POST /config/routes).')),
    ),
  );
}

function matchText(m) {
  if (!m) return 'everything';
  const parts = [];
  if (m.host) parts.push(Array.isArray(m.host) ? m.host.join(', ') : m.host);
  const p = m.path;
  if (p) parts.push(typeof p === 'string' ? p : p.prefix ? `${p.prefix}…` : p.exact || p.template || p.regex || JSON.stringify(p));
  if (m.methods) parts.push(m.methods.join(' '));
  return parts.join(' ') || JSON.stringify(m);
}

/** The item's configuration as JSON, with a link to edit it. */
function configCard(path, kind, name) {
  const pre = h('pre', { class: 'code', id: 'item-config' }, 'loading…');
  const card = section('Configuration', h('p', {}, link(`/config/edit/${kind}/${seg(name)}`, 'Edit')), pre);
  api(path)
    .then((v) => (pre.textContent = JSON.stringify(v, null, 2)))
    .catch((e) => pre.replaceWith(failure('The configuration could not be read', e)));
  return card;
}

export function route(main, [name], signal) {
  main.append(h('h1', {}, 'Route ', h('code', {}, name)), h('p', {}, link('/routes', '← all routes')));
  historyCharts(main, { dimension: 'route', name }, 'History', signal);
  main.append(configCard(`/config/routes/${seg(name)}`, 'routes', name));
}

export async function upstreams(main) {
  main.append(h('h1', {}, 'Upstreams'));
  const [state, stats] = await Promise.all([api('/upstreams'), lastHour('target')]);
  const rows = state.upstreams.map((g) => ({
    ...g,
    available: g.targets.filter((t) => t.available).length,
    in_flight: g.targets.reduce((n, t) => n + (t.in_flight || 0), 0),
  }));
  const sum = (g, k) => g.targets.reduce((n, t) => n + (stats?.[`${g.name}/${t.address}`]?.[k] || 0), 0);
  const cols = [
    { label: 'Group', cell: (g) => link(`/upstreams/${seg(g.name)}`, g.name) },
    { label: 'Targets available', num: true, cell: (g) => h('span', { class: g.available < g.targets.length ? 'warn-text' : '' }, `${g.available} / ${g.targets.length}`) },
    { label: 'In flight', num: true, cell: (g) => fmt(g.in_flight) },
    { label: 'Requests (1 h)', num: true, cell: (g) => (stats ? fmt(sum(g, 'requests')) : '–') },
  ];
  main.append(
    section(
      `${rows.length} group${rows.length === 1 ? '' : 's'}`,
      ...noHistory(stats),
      table(cols, rows, empty('No upstream groups', 'Add one in the file, or through POST /config/upstreams.')),
    ),
  );
}

export async function upstream(main, [name], signal) {
  main.append(h('h1', {}, 'Upstream ', h('code', {}, name)), h('p', {}, link('/upstreams', '← all upstreams')));
  const box = h('div', {});
  main.append(section('Targets', box));
  const stats = await lastHour('target');
  async function refresh() {
    const state = await api('/upstreams');
    const g = state.upstreams.find((u) => u.name === name);
    if (!g) {
      box.replaceChildren(empty('No such group', `The running configuration has no upstream group named ${name}.`));
      return;
    }
    box.replaceChildren(
      table(
        [
          { label: 'Target', cell: (t) => h('code', {}, t.address) },
          { label: 'Health', cell: (t) => badge(t.healthy ? (t.ejected_for_ms ? 'ejected' : 'healthy') : 'unhealthy') },
          { label: 'Circuit', cell: (t) => badge(t.circuit) },
          { label: 'State', cell: (t) => h('span', { class: 'target-state', 'data-address': t.address }, badge(t.draining ? 'draining' : 'ready')) },
          { label: 'In flight', num: true, cell: (t) => fmt(t.in_flight) },
          { label: 'Requests (1 h)', num: true, cell: (t) => fmt(stats?.[`${name}/${t.address}`]?.requests ?? (stats ? 0 : null)) },
          { label: 'Last hour', cell: (t) => (stats ? spark('target', `${name}/${t.address}`) : '–') },
          { label: 'Action', cell: (t) => drainButton(name, t, box, refresh) },
        ],
        g.targets,
        empty('No targets', 'This group has no targets (or its names resolve to none).'),
      ),
    );
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  signal.addEventListener('abort', () => clearInterval(timer));
  main.append(configCard(`/config/upstreams/${seg(name)}`, 'upstreams', name));
}

function drainButton(group, t, box, refresh) {
  const action = t.draining ? 'ready' : 'drain';
  return h(
    'button',
    {
      class: t.draining ? '' : 'danger',
      'data-drain': t.address,
      onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await api(`/upstreams/${seg(group)}/targets/${seg(t.address)}/${action}`, { method: 'POST' });
          await refresh();
        } catch (e) {
          box.prepend(failure(`Could not ${action} ${t.address}`, e));
          ev.target.disabled = false;
        }
      },
    },
    t.draining ? 'Undrain' : 'Drain',
  );
}

export async function consumers(main) {
  main.append(h('h1', {}, 'Consumers'));
  const [all, stats] = await Promise.all([api('/config/consumers'), lastHour('consumer')]);
  const rows = Object.entries(all || {}).map(([name, c]) => ({ name, ...c }));
  const cols = [
    { label: 'Consumer', cell: (c) => link(`/consumers/${seg(c.name)}`, c.name) },
    { label: 'Groups', cell: (c) => (c.groups || []).join(', ') || '–' },
    ...numbers(stats, (c) => c.name),
    { label: 'Last hour', cell: (c) => (stats ? spark('consumer', c.name) : '–') },
  ];
  main.append(
    section(
      `${rows.length} consumer${rows.length === 1 ? '' : 's'}`,
      ...noHistory(stats),
      table(cols, rows, empty('No consumers', 'Consumers are callers known by a credential (API key, Basic, JWT); add them under `consumers`.')),
    ),
  );
}

export function consumer(main, [name], signal) {
  main.append(h('h1', {}, 'Consumer ', h('code', {}, name)), h('p', {}, link('/consumers', '← all consumers')));
  historyCharts(main, { dimension: 'consumer', name }, 'History', signal);
  main.append(configCard(`/config/consumers/${seg(name)}`, 'consumers', name));
}
