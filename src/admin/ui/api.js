// Calls to the admin API. Every call carries the token the user gave (kept in
// sessionStorage for this tab only); a 401 asks for it again.

const KEY = 'ferrogate.admin-token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An answer the API refused: its status and problem+json body. */
export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body === 'object' ? body.detail || body.title : body;
    super(detail ? String(detail).trim() : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const h = { ...extra };
  const t = token.get();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/**
 * Calls `path`; resolves to the parsed body (JSON or text), or with `full` to
 * {data, etag, status}. Throws ApiError for a non-2xx answer.
 */
export async function api(path, { method = 'GET', body, ifMatch, full = false } = {}) {
  const extra = {};
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (ifMatch) extra['If-Match'] = ifMatch;
  const r = await fetch(path, {
    method,
    headers: headers(extra),
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const type = r.headers.get('content-type') || '';
  const data = type.includes('json') ? await r.json().catch(() => null) : await r.text();
  if (r.status === 401) window.dispatchEvent(new CustomEvent('ferrogate:login'));
  if (!r.ok) throw new ApiError(r.status, data);
  return full ? { data, etag: r.headers.get('etag'), status: r.status } : data;
}

/**
 * Reads the server-sent events of `path` (with the token, which EventSource cannot send)
 * and calls `onEvent` with each event's parsed data until `signal` aborts. Reconnects
 * after two seconds when the stream ends; `onState` hears 'open', 'retrying' or an ApiError.
 */
export async function stream(path, onEvent, signal, onState = () => {}) {
  while (!signal.aborted) {
    try {
      const r = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal });
      if (!r.ok) {
        const type = r.headers.get('content-type') || '';
        const body = type.includes('json') ? await r.json().catch(() => null) : await r.text();
        if (r.status === 401) window.dispatchEvent(new CustomEvent('ferrogate:login'));
        onState(new ApiError(r.status, body));
        return;
      }
      onState('open');
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trim())
            .join('\n');
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    onState('retrying');
    await new Promise((done) => setTimeout(done, 2000));
  }
}

/** `/stats` query string for a scope ({dimension, name}) and range. */
export function statsQuery(metric, scope, from, to, step) {
  const q = new URLSearchParams({ metric, from: String(from), to: String(to) });
  if (step) q.set('step', String(step));
  if (scope && scope.dimension && scope.dimension !== 'gateway') q.set(scope.dimension, scope.name);
  return `/stats?${q}`;
}

/** The /stats series of several metrics of one scope, as uPlot data: [times, ...values]. */
export async function series(metrics, scope, from, to, step) {
  const all = await Promise.all(metrics.map((m) => api(statsQuery(m, scope, from, to, step))));
  const times = all[0].points.map((p) => p[0]);
  return [times, ...all.map((s) => s.points.map((p) => p[1]))];
}

export const now = () => Math.floor(Date.now() / 1000);
