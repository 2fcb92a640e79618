// Alerts (active and recent, each with its rule and the chart of the metric that fired),
// the cache (hit ratio, size, purges) and the queues (depth, age, dead letters, retry).

import { api, series, now, ApiError } from './api.js';
import { h, section, empty, failure, fmt, table, time, badge, seg } from './dom.js';
import { chart } from './chart.js';

export async function alerts(main, _params, signal) {
  main.append(h('h1', {}, 'Alerts'));
  let data;
  try {
    data = await api('/alerts');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      main.append(
        section(
          'No alerting here',
          h('div', { id: 'alerts-empty' }, empty(
            'This gateway does not evaluate alert rules',
            'Its admin listener has no /alerts endpoint: this version of the gateway has no alerting, or no ' +
              '`alerts` section is configured. Rules (a metric, a scope, a condition and a duration) are ' +
              'written in the configuration; see docs/observability.md.',
          )),
        ),
      );
      return;
    }
    throw e;
  }
  const detail = h('div', { id: 'alert-chart' });
  const cols = [
    { label: 'Rule', cell: (a) => h('button', { class: 'linklike', onclick: () => showChart(detail, a, signal) }, a.rule) },
    { label: 'Severity', cell: (a) => badge(a.severity) },
    { label: 'State', cell: (a) => badge(a.state) },
    { label: 'Scope', cell: (a) => `${a.scope?.dimension || 'gateway'}${a.scope?.name ? ' ' + a.scope.name : ''}` },
    { label: 'Condition', cell: (a) => `${a.metric} ${a.condition} for ${a.window} s` },
    { label: 'Value', num: true, cell: (a) => fmt(a.value) },
    { label: 'Since', cell: (a) => time(a.since) },
    { label: 'Fired', cell: (a) => time(a.fired_at) },
    { label: 'Resolved', cell: (a) => time(a.resolved_at) },
    { label: 'Summary', cell: (a) => a.summary || '' },
  ];
  main.append(
    section('Active', table(cols, data.active || [], empty('Nothing is firing', 'No rule is pending or firing now.'))),
    section('Recent', table(cols, data.recent || [], empty('No recent alerts', 'Resolved alerts appear here.'))),
    section('The chart that fired', detail),
  );
  detail.append(empty('Pick an alert', 'Choose a rule above to draw its metric around the time it fired.'));
  const first = (data.active || [])[0] || (data.recent || [])[0];
  if (first) showChart(detail, first, signal);
}

async function showChart(box, a, signal) {
  box.replaceChildren(h('p', {}, h('strong', {}, a.rule), ` — ${a.metric} ${a.condition} for ${a.window} s`));
  const at = a.fired_at || a.since || now();
  const from = Math.max(at - 1800, 0);
  const to = Math.min((a.resolved_at || now()) + 600, now());
  const m = /(-?[0-9.]+)/.exec(a.condition || '');
  const unit = a.metric === 'error_ratio' ? '%' : /^p[0-9]+$/.test(a.metric) ? 'ms' : a.metric === 'rps' ? 'req/s' : '';
  const dimension = a.scope?.dimension || 'gateway';
  if (!['gateway', 'route', 'target', 'consumer', 'client'].includes(dimension)) {
    box.append(empty('No chart for this scope', `The traffic history keeps no series per ${dimension}; see the Upstreams page for its targets.`));
    return;
  }
  const c = chart(box, { title: a.metric, unit, labels: [a.metric], threshold: m ? Number(m[1]) : undefined });
  try {
    const d = await series([a.metric], a.scope, from, to, 10);
    if (!signal.aborted) c.set(d, [from, to]);
  } catch (e) {
    box.append(failure('The chart could not be drawn', e));
  }
}

/** The values of one metric in Prometheus text, summed per value of `label` (or in total). */
function metric(text, name, label) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const key = label ? (new RegExp(`${label}="([^"]*)"`).exec(m[2] || '') || [])[1] || '' : '';
    out[key] = (out[key] || 0) + Number(m[3]);
  }
  return out;
}

export async function cache(main) {
  main.append(h('h1', {}, 'Cache'));
  const stats = h('div', {});
  main.append(section('The store', stats));
  try {
    const text = await api('/metrics');
    const outcomes = metric(text, 'ferrogate_cache_requests_total', 'outcome');
    const total = Object.values(outcomes).reduce((a, b) => a + b, 0);
    const hits = (outcomes.hit || 0) + (outcomes.stale || 0) + (outcomes.revalidated || 0);
    const size = metric(text, 'ferrogate_cache_stored_bytes')[''];
    const entries = metric(text, 'ferrogate_cache_entries')[''];
    if (!total && size === undefined) {
      stats.append(empty('No cache in use', 'No route has `cache` configured, or none was asked yet. See docs/caching.md.'));
    } else {
      stats.append(
        h('div', { class: 'tiles' },
          h('div', { class: 'tile' }, h('span', { class: 'label' }, 'Hit ratio (since start)'), h('span', { class: 'value', id: 'cache-hit-ratio' }, total ? fmt(hits / total, '%') : '–')),
          h('div', { class: 'tile' }, h('span', { class: 'label' }, 'Lookups'), h('span', { class: 'value' }, fmt(total))),
          h('div', { class: 'tile' }, h('span', { class: 'label' }, 'Stored'), h('span', { class: 'value' }, fmt(size ?? null, 'B'))),
          h('div', { class: 'tile' }, h('span', { class: 'label' }, 'Entries'), h('span', { class: 'value' }, fmt(entries ?? null)))),
        table(
          [{ label: 'Outcome', cell: (r) => r[0] }, { label: 'Lookups', num: true, cell: (r) => fmt(r[1]) }],
          Object.entries(outcomes).sort((a, b) => b[1] - a[1]),
          empty('No lookups yet', ''),
        ),
      );
    }
  } catch (e) {
    stats.append(failure('The cache metrics could not be read', e));
  }
  const kind = h('select', { id: 'purge-kind' }, h('option', { value: 'url' }, 'URL'), h('option', { value: 'prefix' }, 'Prefix'), h('option', { value: 'surrogate_key' }, 'Tag (surrogate key)'));
  const value = h('input', { id: 'purge-value', required: true, placeholder: 'https://shop.example/products/1', autocomplete: 'off' });
  const out = h('div', { 'aria-live': 'polite', id: 'purge-result' });
  const purge = async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('/cache/purge', { method: 'POST', body: { [kind.value]: value.value } });
      out.replaceChildren(h('p', { class: 'ok' }, `Purged ${r.purged} entr${r.purged === 1 ? 'y' : 'ies'}.`));
    } catch (e) {
      out.replaceChildren(failure('The purge was refused', e));
    }
  };
  main.append(
    section('Purge', h('form', { onsubmit: purge, class: 'toolbar' }, h('label', {}, 'By ', kind), h('label', { class: 'grow' }, ' ', value), h('button', { type: 'submit', class: 'danger' }, 'Purge')), out),
  );
}

export async function queues(main) {
  main.append(h('h1', {}, 'Queues'));
  const list = await api('/queues');
  const detail = h('div', { id: 'dead-letters' });
  main.append(
    section(
      'Queues',
      table(
        [
          { label: 'Queue', cell: (q) => h('button', { class: 'linklike', onclick: () => dead(detail, q.name) }, q.name) },
          { label: 'Depth', num: true, cell: (q) => fmt(q.depth) },
          { label: 'Oldest due job waited', num: true, cell: (q) => fmt(q.oldest_due_age_seconds, 's') },
          { label: 'Dead letters', num: true, cell: (q) => fmt(q.dead_letters) },
        ],
        list,
        empty('No queues', 'Queued routes (`queue` on a route) store requests as jobs; see docs/async.md.'),
      ),
    ),
    section('Dead letters', detail),
  );
  detail.append(empty('Pick a queue', 'Choose a queue above to list the jobs that failed every attempt.'));
}

async function dead(box, queue) {
  box.replaceChildren(h('p', {}, 'Queue ', h('code', {}, queue)));
  try {
    const jobs = await api(`/queues/${seg(queue)}/dead`);
    const act = (job, how) => async () => {
      try {
        await api(`/queues/${seg(queue)}/dead/${seg(job.id)}${how === 'retry' ? '/retry' : ''}`, { method: how === 'retry' ? 'POST' : 'DELETE' });
        dead(box, queue);
      } catch (e) {
        box.prepend(failure(`Could not ${how} job ${job.id}`, e));
      }
    };
    box.append(
      table(
        [
          { label: 'Job', cell: (j) => h('code', {}, j.id) },
          { label: 'Attempts', num: true, cell: (j) => fmt(j.attempts) },
          { label: 'Last error', cell: (j) => j.error || j.last_error || '–' },
          { label: '', cell: (j) => h('span', {}, h('button', { onclick: act(j, 'retry') }, 'Retry'), ' ', h('button', { class: 'danger', onclick: act(j, 'delete') }, 'Delete')) },
        ],
        jobs,
        empty('No dead letters', 'Every job of this queue was delivered or is still being tried.'),
      ),
    );
  } catch (e) {
    box.append(failure('The dead letters could not be read', e));
  }
}
