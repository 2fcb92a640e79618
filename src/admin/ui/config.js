// Configuration: the running configuration as YAML, the versions kept with a diff of any
// two and a rollback, and an editor that applies a resource with If-Match and shows every
// problem the validator found at its key path (a refused change changes nothing).

import { api, ApiError } from './api.js';
import { h, section, empty, failure, table, time, seg, link } from './dom.js';

export async function render(main, params, signal) {
  main.append(h('h1', {}, 'Configuration'));
  const [kind, name] = params[0] === 'edit' ? params.slice(1) : ['routes', ''];
  main.append(editor(kind, name));
  main.append(await versions());
  main.append(await running());
}

async function running() {
  const pre = h('pre', { class: 'code', id: 'running-config' });
  const card = section('Running configuration', pre);
  try {
    pre.textContent = await api('/config');
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 403)) {
      pre.replaceWith(failure('The configuration could not be read', e));
      return card;
    }
    // The YAML export needs the admin role (it holds secrets); a viewer sees the JSON.
    const all = await api('/config/sections');
    pre.textContent = JSON.stringify(all, null, 2);
    card.insertBefore(h('p', { class: 'note' }, 'Your token is not an admin token: shown as JSON with secrets as fingerprints.'), pre);
  }
  return card;
}

async function versions() {
  const card = section('Versions');
  let list;
  try {
    list = await api('/config/versions');
  } catch (e) {
    card.append(failure('The versions could not be read', e));
    return card;
  }
  list = [...list].sort((a, b) => b.version - a.version);
  const current = list[0]?.version;
  const diffBox = h('div', { id: 'diff' });
  const pick = (id, v) =>
    h('select', { id }, list.map((x) => h('option', { value: String(x.version), selected: x.version === v }, `version ${x.version}`)));
  const from = pick('diff-from', list[1]?.version ?? current);
  const to = pick('diff-to', current);
  const status = h('div', { 'aria-live': 'polite' });
  card.append(
    status,
    table(
      [
        { label: 'Version', num: true, cell: (v) => h('span', { class: 'version' }, String(v.version)) },
        { label: 'Applied', cell: (v) => time(v.time) },
        { label: 'By', cell: (v) => v.who || '–' },
        { label: 'Source', cell: (v) => v.source || '–' },
        { label: '', cell: (v) => (v.version === current ? h('span', { class: 'badge good' }, 'running') : rollbackButton(v.version, status)) },
      ],
      list,
      empty('No versions kept', 'Versions are kept when the gateway has an `admin` section; each change through the API adds one.'),
    ),
  );
  if (list.length > 1) {
    const show = async () => {
      try {
        const text = await api(`/config/diff?from=${from.value}&to=${to.value}`);
        diffBox.replaceChildren(diffView(typeof text === 'string' ? text : JSON.stringify(text, null, 2)));
      } catch (e) {
        diffBox.replaceChildren(failure('The diff could not be made', e));
      }
    };
    card.append(
      h('div', { class: 'toolbar' }, h('label', {}, 'Diff from ', from), h('label', {}, ' to ', to), h('button', { onclick: show }, 'Show diff')),
      diffBox,
    );
  }
  return card;
}

function diffView(text) {
  if (!text.trim()) return empty('No difference', 'The two versions have the same configuration.');
  return h(
    'pre',
    { class: 'code diff' },
    text.split('\n').map((l) => h('span', { class: l.startsWith('+') ? 'add' : l.startsWith('-') ? 'del' : l.startsWith('@') ? 'hunk' : '' }, l + '\n')),
  );
}

function rollbackButton(version, status) {
  let armed = false;
  const b = h('button', {
    'data-rollback': String(version),
    onclick: async () => {
      if (!armed) {
        armed = true;
        b.textContent = `Confirm rollback to ${version}`;
        b.classList.add('danger');
        return;
      }
      b.disabled = true;
      try {
        const { etag } = await api('/status', { full: true });
        const r = await api('/config/rollback', { method: 'POST', body: { version }, ifMatch: etag || '*' });
        status.replaceChildren(h('p', { class: 'ok' }, `Rolled back: version ${r.version} runs version ${version}'s configuration.`));
        setTimeout(() => window.dispatchEvent(new HashChangeEvent('hashchange')), 800);
      } catch (e) {
        status.replaceChildren(problems(`Rollback to ${version} refused`, e));
        b.disabled = false;
      }
    },
  }, 'Roll back');
  return b;
}

/** A refused change: its message and every problem at its key path. */
function problems(what, e) {
  const box = failure(what, e);
  const errors = e.body && Array.isArray(e.body.errors) ? e.body.errors : [];
  if (errors.length) {
    box.querySelector('p').textContent = `${e.status}: nothing changed. ${errors.length} problem${errors.length === 1 ? '' : 's'}:`;
    box.append(
      h('ul', { class: 'problems' }, errors.map((p) => h('li', { 'data-path': p.path }, h('code', { class: 'key' }, p.path), ': ', p.message))),
    );
  }
  return box;
}

const KINDS = [
  ['routes', 'Route'],
  ['upstreams', 'Upstream group'],
  ['consumers', 'Consumer'],
  ['sections', 'Section'],
];

function editor(kind, name) {
  const kindSel = h('select', { id: 'edit-kind' }, KINDS.map(([k, label]) => h('option', { value: k, selected: k === kind }, label)));
  const nameIn = h('input', { id: 'edit-name', value: name || '', placeholder: 'name', required: true, autocomplete: 'off' });
  const text = h('textarea', { id: 'edit-text', rows: '14', spellcheck: 'false', 'aria-label': 'the resource as JSON' });
  const out = h('div', { id: 'edit-result', 'aria-live': 'polite' });
  let etag = '*';
  const load = async () => {
    out.replaceChildren();
    if (!nameIn.value) return;
    try {
      const r = await api(`/config/${kindSel.value}/${seg(nameIn.value)}`, { full: true });
      text.value = JSON.stringify(r.data, null, 2);
      etag = r.etag || '*';
      out.replaceChildren(h('p', { class: 'note' }, `Loaded at version ${etag}.`));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        text.value = '{\n}';
        etag = '*';
        out.replaceChildren(h('p', { class: 'note' }, `No ${kindSel.value.replace(/s$/, '')} named ${nameIn.value} yet: applying adds it.`));
      } else out.replaceChildren(failure('Could not load it', e));
    }
  };
  const parsed = () => {
    try {
      return JSON.parse(text.value);
    } catch (e) {
      out.replaceChildren(failure('Not valid JSON', e));
      return undefined;
    }
  };
  // A dry run: the whole configuration is validated and compiled, nothing is applied.
  const check = async () => {
    const body = parsed();
    if (body === undefined) return;
    try {
      await api(`/config/${kindSel.value}/${seg(nameIn.value)}?dry_run=true`, { method: 'PUT', body, ifMatch: etag, full: true });
      out.replaceChildren(h('p', { class: 'ok', id: 'edit-valid' }, 'Valid: applying it would change the configuration as shown. Nothing is applied yet.'));
    } catch (e) {
      out.replaceChildren(problems('The change would be refused', e));
      if (e.status === 412) out.append(h('p', {}, 'The configuration changed since you loaded it: load it again.'));
    }
  };
  const apply = async (ev) => {
    ev.preventDefault();
    const body = parsed();
    if (body === undefined) return;
    try {
      const r = await api(`/config/${kindSel.value}/${seg(nameIn.value)}`, { method: 'PUT', body, ifMatch: etag, full: true });
      etag = r.etag || '*';
      out.replaceChildren(h('p', { class: 'ok', id: 'edit-applied' }, `Applied as version ${r.data.version}.`));
      const v = document.querySelector('#main section.card:nth-of-type(2)');
      if (v) v.replaceWith(await versions());
    } catch (e) {
      out.replaceChildren(problems('The change was refused', e));
      if (e.status === 412) out.append(h('p', {}, 'The configuration changed since you loaded it: load it again, then apply.'));
    }
  };
  if (name) queueMicrotask(load);
  return section(
    'Edit a resource',
    h('p', { class: 'note' }, 'Loads a resource as JSON (same keys as the file). Check validates the whole configuration that would result without applying anything; applying validates it again and changes nothing if any problem is found.'),
    h(
      'form',
      { class: 'editor', onsubmit: apply },
      h('div', { class: 'toolbar' }, h('label', {}, 'Kind ', kindSel), h('label', {}, ' Name ', nameIn), h('button', { type: 'button', onclick: load }, 'Load')),
      text,
      h('div', { class: 'toolbar' }, h('button', { type: 'button', id: 'edit-check', onclick: check }, 'Check'), ' ', h('button', { type: 'submit', class: 'primary', id: 'edit-apply' }, 'Validate and apply'), ' ', link('/config', 'Cancel')),
    ),
    out,
  );
}
