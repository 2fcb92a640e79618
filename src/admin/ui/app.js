// The dashboard's shell: the pages by address (#/…), the login form, and the collector of
// script errors (window.ferrogateErrors) that the browser tests read.

import { api, token, ApiError } from './api.js';
import { h, failure } from './dom.js';
import * as overview from './overview.js';
import * as tables from './tables.js';
import * as config from './config.js';
import * as ops from './operations.js';

window.ferrogateErrors = [];
const collect = (what) => window.ferrogateErrors.push(String(what));
window.addEventListener('error', (e) => collect(e.message || e));
window.addEventListener('unhandledrejection', (e) => collect(e.reason && e.reason.stack ? e.reason.stack : e.reason));
document.addEventListener('securitypolicyviolation', (e) => collect(`CSP: ${e.violatedDirective} ${e.blockedURI}`));

/** Pages: [address prefix, menu label or null, render(main, params, signal)]. */
const PAGES = [
  ['routes', 'Routes', tables.routes, tables.route],
  ['upstreams', 'Upstreams', tables.upstreams, tables.upstream],
  ['consumers', 'Consumers', tables.consumers, tables.consumer],
  ['alerts', 'Alerts', ops.alerts],
  ['config', 'Configuration', config.render, config.render],
  ['cache', 'Cache', ops.cache],
  ['queues', 'Queues', ops.queues],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const logout = document.getElementById('logout');
let current = new AbortController();

nav.append(
  h('a', { href: '#/', 'data-page': '' }, 'Overview'),
  ...PAGES.map(([path, label]) => h('a', { href: `#/${path}`, 'data-page': path }, label)),
);

async function show() {
  current.abort();
  current = new AbortController();
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const page = PAGES.find(([path]) => path === parts[0]);
  for (const a of nav.querySelectorAll('a')) {
    a.toggleAttribute('aria-current', a.dataset.page === (page ? page[0] : ''));
  }
  logout.hidden = !token.get();
  main.replaceChildren();
  main.dataset.page = page ? page[0] : 'overview';
  main.dataset.ready = 'false';
  const render = !page ? overview.render : parts.length > 1 && page[3] ? page[3] : page[2];
  try {
    await render(main, parts.slice(1), current.signal);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    main.append(failure('This page could not be shown', e));
  }
  main.dataset.ready = 'true';
}

/** The login form, shown when the admin API asks for a token. */
function login(message) {
  const input = h('input', { type: 'password', id: 'token', required: true, autocomplete: 'current-password' });
  const out = h('div', { 'aria-live': 'polite' }, message ? h('p', { class: 'error' }, message) : null);
  const form = h(
    'form',
    {
      class: 'card login',
      onsubmit: async (ev) => {
        ev.preventDefault();
        token.set(input.value.trim());
        try {
          await api('/status');
          await show();
        } catch (e) {
          token.clear();
          out.replaceChildren(failure('Not admitted', e));
        }
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'This gateway\u2019s admin API asks for a token (admin.tokens). It is kept in this tab only.'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    out,
  );
  current.abort();
  main.replaceChildren(form);
  main.dataset.page = 'login';
  main.dataset.ready = 'true';
  input.focus();
}

logout.addEventListener('click', () => {
  token.clear();
  login();
});
let asked = false;
window.addEventListener('ferrogate:login', () => {
  if (asked) return;
  asked = true;
  queueMicrotask(() => (asked = false));
  login(token.get() ? 'The token was not accepted.' : '');
  token.clear();
});
window.addEventListener('hashchange', () => {
  show();
  main.focus({ preventScroll: true });
});
document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});
show();
