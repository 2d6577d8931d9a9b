// order-saga ops console. Plain JavaScript, no dependencies, no build step:
// the daemon embeds this file. Every piece of data reaches the page through
// textContent / attributes built here (never as HTML), and every request goes
// to the daemon's own /ops endpoints with the session's CSRF token.
'use strict';

const SVG_NS = 'http' + '://www.w3.org/2000/svg';
const FILTERS = ['order_id', 'customer_id', 'state', 'stuck', 'older_than', 'tenant_region', 'definition_version', 'quarantined',
  'terminal', 'timers_overdue', 'unpublished', 'dead_lettered_within'];
const REFRESH_MS = 5000;

const session = { actor: null, role: null, csrf: null };
// How this daemon lets operators sign in (from the 401 of /ops/ui/session).
let signInMethods = { identity_provider: false, token: true };

// Why a sign-in through the identity provider came back without a session
// (the callback's `sign_in_error`; never the provider's own text).
const SIGN_IN_ERRORS = {
  no_role: 'You signed in at the identity provider, but your account has no ops role (ops:read, ops:act or ops:admin). Ask for one, then sign in again.',
  refused: 'The identity provider did not sign you in (access denied).',
  expired: 'That sign-in took too long or was already used. Sign in again.',
  mismatch: 'That sign-in was not started in this browser. Sign in again.',
  unavailable: 'The identity provider cannot be reached right now. Try again in a moment.',
  invalid_token: 'The identity provider’s answer did not pass the checks (logged on the daemon). Sign in again.',
  provider: 'The identity provider answered with an error (logged on the daemon). Sign in again.',
};
let cleanup = [];   // timers of the current page, stopped when the page changes
let knownStates = [];

// ---------------------------------------------------------------- helpers

/** h('a', {href: '#/', class: 'x', onclick: f}, 'text', child) */
function h(tag, attrs, ...kids) {
  const el = tag.startsWith('svg:') ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  // Children may nest arrays at any depth (a list of [label, value] pairs).
  for (const kid of kids.flat(Infinity)) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  // UTC (what logs and the database say), with the operator's local time beside it.
  const utc = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return `${utc} (${d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })} local)`;
}

function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  setTimeout(() => { if (t.textContent === msg) t.textContent = ''; }, 6000);
}

function actionLabel(a) {
  const name = a.action.replace(/_/g, ' ');
  if (a.timer) return `${name}: ${a.timer}`;
  if (a.event) return `${name}: ${a.event}`;
  return name;
}

function parseQuery(q) {
  const out = {};
  for (const [k, v] of new URLSearchParams(q || '')) out[k] = v;
  return out;
}

function hashFor(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== '' && v !== undefined && v !== null) q.set(k, v);
  const s = q.toString();
  return `#${path}${s ? '?' + s : ''}`;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'error';
    this.details = e.details || null;
  }
}

// Whether the daemon answers: a banner says so when it does not, the page
// keeps what it showed (marked as of when), and everything reloads by itself
// once it answers again.
const link = { down: false, since: null, lastData: null, probe: null };
const RECONNECT_MS = 5000;
const clock = (d) => d.toLocaleTimeString();

function showFreshness() {
  const f = document.getElementById('freshness');
  if (f) f.textContent = link.lastData ? `Data as of ${clock(link.lastData)}` : '';
}

function markDown() {
  if (link.down) return;
  link.down = true;
  link.since = new Date();
  const b = document.getElementById('offline');
  b.textContent = `The daemon does not answer (since ${clock(link.since)}). What you see is from ${
    link.lastData ? clock(link.lastData) : 'before'} and may be out of date; actions cannot be taken. Retrying every ${RECONNECT_MS / 1000} s…`;
  b.hidden = false;
  link.probe = setInterval(async () => {
    try {
      const r = await fetch('/ops/ui/session', { credentials: 'same-origin', cache: 'no-store' });
      if ([502, 503, 504].includes(r.status)) return;
      markUp();
      toast('The daemon answers again: the page is up to date.');
      if (r.status === 401) { session.csrf = null; showSignIn('Your session has ended. Sign in again.'); } else route();
    } catch (_) { /* still down */ }
  }, RECONNECT_MS);
}

function markUp() {
  if (!link.down) return;
  link.down = false;
  clearInterval(link.probe);
  document.getElementById('offline').hidden = true;
}

// `peek`: a background check whose answer is not drawn (it does not make
// the page's data newer).
async function api(method, path, body, peek) {
  const headers = { 'X-CSRF-Token': session.csrf || '' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (_) {
    // No answer at all: the daemon is down or unreachable.
    markDown();
    throw new ApiError(0, { error: { code: 'unreachable', message: 'The daemon does not answer.' } });
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  // A proxy's answer for a daemon that is not there (not one of ours).
  if ([502, 503, 504].includes(resp.status) && !(data && data.error)) {
    markDown();
    throw new ApiError(0, { error: { code: 'unreachable', message: `The daemon does not answer (HTTP ${resp.status}).` } });
  }
  markUp();
  if (resp.status === 401 && path !== '/ops/ui/session') {
    // The session ended (signed out elsewhere, idle, expired): sign in again;
    // the same page opens after. A refused write did nothing: say so.
    session.csrf = null;
    showSignIn(method === 'GET' ? 'Your session has ended. Sign in again.'
      : 'Your session ended before this was sent: nothing was applied. Sign in again; you return to the same page.');
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  if (method === 'GET' && !peek) {
    link.lastData = new Date();
    showFreshness();
  }
  return data;
}

// ---------------------------------------------------------------- shell

function setTheme(theme) {
  if (theme) document.documentElement.setAttribute('data-theme', theme);
  else document.documentElement.removeAttribute('data-theme');
  try { if (theme) localStorage.setItem('order-saga-theme', theme); } catch (_) { /* private mode */ }
}

function currentTheme() {
  const set = document.documentElement.getAttribute('data-theme');
  if (set) return set;
  return window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function mount(...nodes) {
  const main = document.getElementById('main');
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

function focusHeading() {
  const h1 = document.querySelector('main h1');
  if (h1) { h1.setAttribute('tabindex', '-1'); h1.focus({ preventScroll: true }); }
}

function showSignIn(message, tone) {
  stopPage();
  document.getElementById('top').hidden = true;
  const err = h('p', { class: `notice ${tone || 'bad'}`, role: tone === 'ok' ? 'status' : 'alert', hidden: !message }, message || '');
  document.title = 'Sign in — order-saga ops';
  const parts = [];
  if (signInMethods.identity_provider) {
    parts.push(h('p', {}, h('a', { class: 'button primary', id: 'sign-in-idp', href: '/ops/ui/sign-in' },
      'Sign in with your identity provider')),
    h('p', { class: 'muted' }, 'You act under your own account, with the ops role it has there.'));
  }
  let token = null;
  if (signInMethods.token) {
    token = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true });
    const actor = h('input', { type: 'text', id: 'actor-name', name: 'actor', autocomplete: 'username', required: true, maxlength: 128,
      placeholder: 'e.g. alice' });
    const submit = h('button', { type: 'submit', class: signInMethods.identity_provider ? '' : 'primary' }, 'Sign in');
    const form = h('form', {
      onsubmit: async (ev) => {
        ev.preventDefault();
        submit.disabled = true;
        try {
          const s = await api('POST', '/ops/ui/session', { token: token.value, actor: actor.value });
          token.value = '';
          startSession(s);
        } catch (e) {
          err.hidden = false;
          err.textContent = e.status === 401 ? 'That is not the ops token.' : e.message;
          submit.disabled = false;
          if (e.status === 401) token.value = '';
          token.focus();
        }
      },
    },
    h('label', { for: 'token' }, 'Ops token', token),
    h('label', { for: 'actor-name' }, 'Your name (recorded with every action you take)', actor),
    submit);
    if (signInMethods.identity_provider) parts.push(h('h2', {}, 'Or with the ops token'));
    parts.push(h('p', { class: 'muted' }, 'Use the daemon’s ORDER_SAGA_OPS_TOKEN. It is sent once, in the request body, and never stored by this page.'),
      form);
  }
  mount(h('div', { class: 'signin' }, h('h1', {}, 'Sign in to the ops console'), err, parts));
  if (token && !signInMethods.identity_provider) token.focus();
  else focusHeading();
}

function startSession(s) {
  if (s.sign_in) signInMethods = s.sign_in;
  session.actor = s.actor;
  session.role = s.role;
  session.csrf = s.csrf_token;
  document.getElementById('actor').textContent = s.actor;
  document.getElementById('role').textContent = s.role;
  document.getElementById('top').hidden = false;
  route();
}

async function signOut() {
  try { await api('DELETE', '/ops/ui/session'); } catch (_) { /* already over */ }
  session.csrf = null;
  session.actor = null;
  session.role = null;
  showSignIn('Signed out.', 'ok');
}

function stopPage() {
  for (const stop of cleanup) stop();
  cleanup = [];
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  cleanup.push(() => clearInterval(id));
}

async function route() {
  if (!session.csrf) return;
  stopPage();
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  const params = parseQuery(query);
  const section = path.startsWith('/sagas') ? 'sagas' : path.startsWith('/bulk') ? 'bulk'
    : path.startsWith('/audit') ? 'audit' : path.startsWith('/definitions') ? 'definitions' : 'overview';
  document.title = `${section[0].toUpperCase()}${section.slice(1)} — order-saga ops`;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const m = path.match(/^\/sagas\/(\d+)$/);
  const job = path.match(/^\/bulk\/jobs\/([0-9a-f-]{36})$/);
  try {
    if (m) await sagaPage(m[1]);
    else if (job) await jobPage(job[1]);
    else if (path === '/sagas') await listPage(params);
    else if (path === '/bulk') await bulkPage(params);
    else if (path === '/audit') await auditPage(params);
    else if (path === '/definitions') await definitionsPage();
    else await overviewPage();
    focusHeading();
  } catch (e) {
    if (e.status === 0) {
      mount(h('h1', {}, 'Waiting for the daemon'),
        h('p', { class: 'notice bad' }, 'The daemon does not answer. This page loads by itself as soon as it does.'));
    } else if (e.status !== 401) {
      mount(h('h1', {}, 'Something went wrong'), h('p', { class: 'notice bad', role: 'alert' }, e.message));
    }
  }
}

// ---------------------------------------------------------------- overview

async function overviewPage() {
  const heading = h('h1', {}, 'Overview');
  const updated = h('span', { class: 'muted', 'aria-live': 'off' });
  const body = h('div', {});
  const paused = h('input', { type: 'checkbox', id: 'pause' });
  mount(heading, h('div', { class: 'form-row' }, updated,
    h('label', { class: 'check', for: 'pause' }, paused, 'Pause auto-refresh')), body);
  const draw = async () => {
    if (paused.checked) return;
    const o = await api('GET', '/ops/overview');
    knownStates = o.states.map((s) => s.state);
    // Keep the keyboard where it was across the redraw: the same link or
    // control, found again by what it points to and says.
    const keyOf = (e) => `${e.tagName}|${e.getAttribute('href') || e.id}|${e.textContent}`;
    const had = document.activeElement && body.contains(document.activeElement) ? keyOf(document.activeElement) : null;
    body.replaceChildren(...renderOverview(o));
    if (had) {
      const again = [...body.querySelectorAll('a, button, input, select')].find((e) => keyOf(e) === had);
      if (again) again.focus({ preventScroll: true });
    }
    updated.textContent = `Updated ${when(o.at)} (every ${REFRESH_MS / 1000}s)`;
  };
  await draw();
  every(REFRESH_MS, () => draw().catch(() => {}));
}

function card(label, value, href, sub, alert) {
  return h('div', { class: `card${alert ? ' alert' : ''}` },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value' }, href ? h('a', { href, 'aria-label': `${label}: ${value}` }, String(value)) : String(value)),
    sub ? h('div', { class: 'sub' }, sub) : null);
}

// Due timers wait until the partitions that could answer them are consumed
// past their due time (event time): say which partition is furthest behind.
function slowest(p) {
  if (!p) return null;
  return p.behind_seconds > 5
    ? `timers wait for ${p.topic}/${p.partition}, consumed ${duration(p.behind_seconds)} behind`
    : 'consumer caught up';
}

function renderOverview(o) {
  const inflight = o.states.filter((s) => !s.terminal).reduce((n, s) => n + s.count, 0);
  const stuck = o.states.reduce((n, s) => n + s.stuck, 0);
  const lag = o.consumer_lag || { messages: 0, partitions: [] };
  const cards = h('div', { class: 'cards' },
    card('In flight', inflight, hashFor('/sagas')),
    card('Stuck (over max dwell)', stuck, hashFor('/sagas', { stuck: 'true' }), null, stuck > 0),
    card('Quarantined', o.quarantined, hashFor('/sagas', { quarantined: 'true', terminal: 'true' }), null, o.quarantined > 0),
    card('Timers overdue', o.timers_overdue, hashFor('/sagas', { timers_overdue: 'true', terminal: 'true' }),
      slowest(o.slowest_partition), o.timers_overdue > 0),
    card('Outbox backlog', o.outbox_backlog, hashFor('/sagas', { unpublished: 'true', terminal: 'true' }),
      o.outbox_oldest_age_seconds !== null ? `oldest ${duration(o.outbox_oldest_age_seconds)}` : 'nothing waiting'),
    card('Dead-lettered, last hour', o.dead_lettered_last_hour,
      hashFor('/sagas', { dead_lettered_within: '1h', terminal: 'true' }),
      o.dead_lettered_last_hour_without_saga ? `${o.dead_lettered_last_hour_without_saga} name no saga (DLQ topic)` : null,
      o.dead_lettered_last_hour > 0),
    card('Consumer lag', lag.messages, null, `${lag.scope || 'this replica'}: ${lag.partitions.length} of ${(o.partitions || []).length} partitions (table below)`));
  const rows = o.states.map((s) => h('tr', {},
    h('th', { scope: 'row' }, h('a', { href: hashFor('/sagas', { state: s.state }) }, s.state),
      s.terminal ? h('span', { class: 'muted' }, ' (terminal)') : null),
    h('td', { class: 'num' }, h('a', { href: hashFor('/sagas', { state: s.state }) }, String(s.count))),
    h('td', { class: 'num' }, s.terminal ? '—' : h('a', {
      href: hashFor('/sagas', { state: s.state, stuck: 'true' }),
      class: s.stuck > 0 ? 'badge bad' : '',
    }, String(s.stuck))),
    h('td', { class: 'num' }, s.oldest_age_seconds === null ? '—'
      : h('a', { href: hashFor('/sagas', { state: s.state }) }, duration(s.oldest_age_seconds))),
    h('td', { class: 'num' }, s.max_dwell_seconds === null ? '—' : duration(s.max_dwell_seconds))));
  const table = h('table', {},
    h('caption', { class: 'muted' }, 'Sagas per state. Oldest = longest time in that state now.'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col', class: 'num' }, 'Sagas'),
      h('th', { scope: 'col', class: 'num' }, 'Stuck'), h('th', { scope: 'col', class: 'num' }, 'Oldest'),
      h('th', { scope: 'col', class: 'num' }, 'Max dwell'))),
    h('tbody', {}, rows));
  // Every inbound partition of the group (event time, from the database),
  // with the messages behind where this replica consumes it.
  const here = new Map(lag.partitions.map((p) => [`${p.topic}/${p.partition}`, p.lag]));
  const parts = o.partitions || [];
  const lagTable = h('section', { class: 'panel', id: 'lag', 'aria-labelledby': 'lag-h' },
    h('h2', { id: 'lag-h' }, 'Consumer: every inbound partition'),
    h('p', { class: 'muted' }, `Applied through (event time): the whole group, as each replica last reported. Messages behind: ${lag.scope || 'this replica'} only.`),
    parts.length === 0 ? h('p', { class: 'muted' }, 'No partition has reported yet.')
      : h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Topic'), h('th', { scope: 'col', class: 'num' }, 'Partition'),
        h('th', { scope: 'col', class: 'num' }, 'Behind (event time)'), h('th', { scope: 'col' }, 'Reported'),
        h('th', { scope: 'col', class: 'num' }, 'Messages behind'))),
      h('tbody', {}, parts.map((p) => {
        const n = here.get(`${p.topic}/${p.partition}`);
        return h('tr', {}, h('td', {}, p.topic), h('td', { class: 'num' }, String(p.partition)),
          h('td', { class: 'num' }, duration(p.behind_seconds)), h('td', {}, when(p.updated_at)),
          h('td', { class: 'num' }, n === undefined ? h('span', { class: 'muted' }, 'no data here') : String(n)));
      }))));
  return [attentionPanel(o.attention), cards, h('section', { class: 'panel' }, table), versionsPanel(o.versions || []), lagTable];
}

/** Sagas in flight per definition version, and a way to move them to a newer one. */
function versionsPanel(versions) {
  const rows = versions.map((v) => h('tr', {},
    h('th', { scope: 'row' }, `v${v.definition_version}`,
      h('span', { class: 'muted' }, v.newest ? ' (newest: new sagas start here)' : v.loaded ? '' : ' (not loaded here)')),
    h('td', { class: 'num' }, h('a', { href: hashFor('/sagas', { definition_version: String(v.definition_version) }) }, String(v.in_flight))),
    h('td', {}, v.in_flight > 0 && v.migrates_to.length
      ? v.migrates_to.map((to, i) => [i ? ' ' : '', h('a', {
        class: 'button', href: hashFor('/bulk', { definition_version: String(v.definition_version), action: 'migrate', to_version: String(to) }),
      }, `Move to v${to}…`)])
      : h('span', { class: 'muted' }, v.in_flight === 0 ? (v.newest ? '—' : 'drained: its file can be removed') : 'no newer version declares a migration from it'))));
  return h('section', { class: 'panel', id: 'versions', 'aria-labelledby': 'versions-h' },
    h('h2', { id: 'versions-h' }, 'Definition versions'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Version'), h('th', { scope: 'col', class: 'num' }, 'In flight'),
      h('th', { scope: 'col' }, 'Move'))), h('tbody', {}, rows)));
}

const NEED_LABEL = {
  quarantined: 'Quarantined', awaiting_operator: 'Awaiting operator', timer_overdue: 'Timer overdue',
  no_reply: 'No reply', stuck: 'Stuck',
};

/** The sagas that need a human, most urgent first, each with why. */
function attentionPanel(a) {
  const items = (a && a.items) || [];
  const heading = h('h2', { id: 'attention-h' }, items.length ? `Needs attention (${items.length})` : 'Needs attention');
  if (!items.length) {
    return h('section', { class: 'panel', id: 'attention', 'aria-labelledby': 'attention-h' }, heading,
      h('p', { class: 'muted' }, 'Nothing waits for a human: no saga is quarantined, awaiting an operator, overdue or stuck.'));
  }
  return h('section', { class: 'panel attention', id: 'attention', 'aria-labelledby': 'attention-h' }, heading,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Order'), h('th', { scope: 'col' }, 'Needs'),
      h('th', { scope: 'col' }, 'Why'), h('th', { scope: 'col', class: 'num' }, 'In state'), h('th', { scope: 'col' }, 'Region'))),
    h('tbody', {}, items.map((i) => h('tr', { 'data-need': i.need },
      h('td', {}, h('a', { href: `#/sagas/${i.order_id}` }, String(i.order_id))),
      h('td', {}, h('span', { class: `badge ${i.need === 'stuck' || i.need === 'no_reply' ? 'warn' : 'bad'}` }, NEED_LABEL[i.need] || i.need)),
      h('td', {}, i.why),
      h('td', { class: 'num' }, duration(i.age_in_state_seconds)),
      h('td', {}, i.tenant_region))))));
}

// ---------------------------------------------------------------- saga list

function filterForm(params, onApply, submitLabel) {
  const field = (name, label, input) => h('label', { for: `f-${name}` }, label, input);
  const stateSel = h('select', { id: 'f-state', name: 'state' }, h('option', { value: '' }, 'any'),
    knownStates.map((s) => h('option', { value: s, selected: params.state === s }, s)));
  if (params.state && !knownStates.includes(params.state)) stateSel.append(h('option', { value: params.state, selected: true }, params.state));
  const text = (name, ph) => h('input', { id: `f-${name}`, name, value: params[name] || '', placeholder: ph, size: 8 });
  const check = (name, label) => h('label', { class: 'check', for: `f-${name}` },
    h('input', { type: 'checkbox', id: `f-${name}`, name, checked: params[name] === 'true' }), label);
  const quarantined = h('select', { id: 'f-quarantined', name: 'quarantined' },
    h('option', { value: '' }, 'either'), h('option', { value: 'true', selected: params.quarantined === 'true' }, 'yes'),
    h('option', { value: 'false', selected: params.quarantined === 'false' }, 'no'));
  const form = h('form', {
    class: 'filters', 'aria-label': 'Filters',
    onsubmit: (ev) => {
      ev.preventDefault();
      onApply(readFilters(form));
    },
  },
  h('div', { class: 'form-row' },
    field('order_id', 'Order', text('order_id', '42')),
    field('customer_id', 'Customer', text('customer_id', 'c-123')),
    field('state', 'State', stateSel),
    field('older_than', 'In state at least', text('older_than', '15m')),
    field('tenant_region', 'Region', text('tenant_region', 'eu')),
    field('definition_version', 'Definition version', text('definition_version', '1')),
    field('quarantined', 'Quarantined', quarantined),
    field('dead_lettered_within', 'Dead-lettered within', text('dead_lettered_within', '1h'))),
  h('div', { class: 'form-row' },
    check('stuck', 'Stuck only'), check('timers_overdue', 'Timer overdue'), check('unpublished', 'Unpublished outbox rows'),
    check('terminal', 'Include terminal states'),
    h('button', { type: 'submit', class: 'primary' }, submitLabel)));
  return form;
}

/// The filters as the form shows them now (applied or not).
function readFilters(form) {
  const out = {};
  for (const name of FILTERS) {
    const el = form.elements[name];
    if (!el) continue;
    if (el.type === 'checkbox') { if (el.checked) out[name] = 'true'; } else if (el.value.trim()) out[name] = el.value.trim();
  }
  return out;
}

function dwellCell(s) {
  const age = duration(s.age_in_state_seconds);
  if (s.max_dwell_seconds === null || s.max_dwell_seconds === undefined) return h('span', {}, age);
  return h('span', { class: 'dwell' },
    // Red once over (a full meter at exactly `high` would stay amber).
    h('meter', { min: 0, max: s.max_dwell_seconds, low: s.max_dwell_seconds * 0.75, high: s.max_dwell_seconds * 0.99,
      optimum: 0, value: Math.min(s.age_in_state_seconds, s.max_dwell_seconds),
      'aria-label': `${age} of ${duration(s.max_dwell_seconds)} expected` }),
    ` ${age} / ${duration(s.max_dwell_seconds)}`,
    s.age_in_state_seconds > s.max_dwell_seconds ? h('strong', {}, ` — over by ${duration(s.age_in_state_seconds - s.max_dwell_seconds)}`) : null);
}

async function ensureStates() {
  if (knownStates.length) return;
  const o = await api('GET', '/ops/overview');
  knownStates = o.states.map((s) => s.state);
}

async function listPage(params) {
  await ensureStates();
  const filters = {};
  for (const k of FILTERS) if (params[k]) filters[k] = params[k];
  const q = new URLSearchParams({ ...filters, limit: '50' });
  if (params.cursor) q.set('cursor', params.cursor);
  const form = filterForm(filters, (f) => { location.hash = hashFor('/sagas', f); }, 'Apply filters');
  let page;
  try {
    page = await api('GET', `/ops/sagas?${q}`);
  } catch (e) {
    if (e.status !== 422) throw e;
    // A filter value the daemon refuses: say which, keep the form to fix it.
    const which = e.details && e.details.parameter;
    mount(h('h1', {}, 'Sagas'), form,
      h('p', { class: 'notice bad', role: 'alert', id: 'filter-error' }, `${which ? `${which}: ` : ''}${e.message}`));
    const input = which && form.elements[which];
    if (input) input.focus();
    return;
  }
  // A state no loaded definition has matches nothing: say so.
  const unknownState = filters.state && knownStates.length && !knownStates.includes(filters.state);
  const rows = page.sagas.map((s) => h('tr', {},
    h('td', {}, h('a', { href: `#/sagas/${s.order_id}` }, String(s.order_id))),
    h('td', {}, s.state),
    h('td', {}, dwellCell(s), s.stuck ? h('span', { class: 'badge bad' }, ' stuck') : null),
    h('td', {}, s.tenant_region),
    h('td', { class: 'num' }, String(s.definition_version)),
    h('td', { class: 'num' }, String(s.version)),
    h('td', {}, s.quarantined !== null ? h('span', { class: 'badge bad', title: s.quarantined }, 'quarantined') : '')));
  const table = page.sagas.length === 0 ? h('p', { class: 'notice' }, 'No saga matches these filters.')
    : h('table', {}, h('thead', {}, h('tr', {},
      ['Order', 'State', 'In state / max dwell', 'Region', 'Def.', 'Version', ''].map((t) => h('th', { scope: 'col', class: t === 'Def.' || t === 'Version' ? 'num' : null }, t)))),
    h('tbody', {}, rows));
  const pager = h('div', { class: 'pager' },
    params.cursor ? h('a', { class: 'button', href: hashFor('/sagas', filters) }, '⇤ First page') : null,
    page.next_cursor ? h('a', { class: 'button', href: hashFor('/sagas', { ...filters, cursor: page.next_cursor }), rel: 'next' }, 'Next page →') : null,
    h('span', { class: 'muted' }, `${page.sagas.length} shown, oldest in their state first`),
    h('span', { class: 'spacer' }),
    h('a', { href: hashFor('/bulk', filters) }, 'Act on all that match…'));
  mount(h('h1', {}, 'Sagas'), form,
    unknownState ? h('p', { class: 'notice warn', id: 'filter-error' },
      `No loaded definition has a state ${filters.state}: nothing can match it.`) : null,
    h('section', { class: 'panel' }, table, pager));
}

// ---------------------------------------------------------------- one saga

function diagram(def, saga, rawTransitions) {
  const d = def.diagram;
  // The saga's first transition comes from "-" (no state yet): the diagram's start node.
  const transitions = rawTransitions.map((t) => ({ ...t, from: t.from === '-' ? '[*]' : t.from }));
  if (!d) return h('p', { class: 'muted' }, 'The definition of this saga is not loaded on this replica.');
  const W = 170, H = 40, GX = 150, GY = 44, PAD = 40;
  const pos = {};
  for (const n of d.nodes) pos[n.name] = { x: PAD + n.column * (W + GX), y: PAD + n.row * (H + GY) };
  const width = PAD * 2 + (Math.max(...d.nodes.map((n) => n.column)) + 1) * (W + GX) - GX;
  const height = PAD * 2 + (Math.max(...d.nodes.map((n) => n.row)) + 1) * (H + GY) - GY + 20;
  const taken = new Set(transitions.map((t) => `${t.from}→${t.to}→${t.event}`));
  const visited = new Set(transitions.flatMap((t) => [t.from, t.to]));
  visited.add(saga.state);
  const path = transitions.length ? [transitions[0].from, ...transitions.map((t) => t.to)] : [saga.state];
  const svg = h('svg:svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-labelledby': 'diagram-title' },
  h('svg:title', { id: 'diagram-title' }, `State diagram. Current state ${saga.state}. Path taken: ${path.map((p) => (p === '[*]' ? 'start' : p)).join(' → ')}.`),
  h('svg:defs', {},
    ['plain', 'taken'].map((k) => h('svg:marker', { id: `arrow-${k}`, class: k, viewBox: '0 0 10 10', refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, h('svg:path', { d: 'M0,0 L10,5 L0,10 z' })))));
  const edgesDrawn = {};
  const later = [];
  const at = (p0, p1, p2, p3) => (p0 + 3 * p1 + 3 * p2 + p3) / 8; // a cubic's midpoint
  for (const e of d.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const fromStart = e.from === '[*]';
    const isTaken = fromStart ? transitions.length > 0 : taken.has(`${e.from}→${e.to}→${e.event}`);
    // Labels where they help: the path taken and what can happen next.
    const labelled = e.from !== e.to && (isTaken || e.from === saga.state);
    const key = `${e.from}|${e.to}`;
    const nth = edgesDrawn[key] = (edgesDrawn[key] || 0) + 1;
    const off = (nth - 1) * 7;
    let c; // [x1, y1, cx1, cy1, cx2, cy2, x2, y2]
    if (e.from === e.to) {
      // A late event handled in place: a small loop over the box.
      c = [a.x + W - 40, a.y, a.x + W - 40, a.y - 26 - off, a.x + W - 10, a.y - 26 - off, a.x + W - 10, a.y];
    } else if (b.x > a.x) {
      const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2 + off, b.x, b.y + H / 2 + off];
      c = [x1, y1, x1 + GX * 0.6, y1, x2 - GX * 0.6, y2, x2, y2];
    } else if (b.x === a.x) {
      // Same column: around the right-hand side, clear of the boxes between.
      const [x, y1, y2] = [a.x + W, a.y + H / 2 + off, b.y + H / 2 + off];
      c = [x, y1, x + 45 + off, y1, x + 45 + off, y2, x, y2];
    } else {
      // Backwards (a late cancellation): over the top.
      const [x1, x2] = [a.x + W / 2 + off, b.x + W / 2 + off];
      const top = Math.min(a.y, b.y) - 28 - off;
      c = [x1, a.y, x1, top, x2, top, x2, b.y];
    }
    const lx = at(c[0], c[2], c[4], c[6]), ly = at(c[1], c[3], c[5], c[7]);
    const backward = e.from !== e.to && b.x < a.x;
    const edge = h('svg:g', { class: `edge${isTaken ? ' taken' : ''}${backward ? ' backward' : ''}` },
      h('svg:title', {}, `${e.from} → ${e.to} on ${e.event}: ${e.label}`),
      h('svg:path', { d: `M${c[0]},${c[1]} C${c[2]},${c[3]} ${c[4]},${c[5]} ${c[6]},${c[7]}`,
        'marker-end': `url(#arrow-${isTaken ? 'taken' : 'plain'})` }),
      // Full names; edges between the same two states stack their labels.
      labelled ? h('svg:text', { x: lx, y: ly - 4 + (nth - 1) * 12, 'text-anchor': 'middle' }, e.event) : null);
    // A backward edge is drawn over the boxes it passes, not hidden behind
    // them (hidden, it seemed to start from the box in between).
    if (backward) later.push(edge); else svg.append(edge);
  }
  for (const n of d.nodes) {
    const p = pos[n.name];
    const cls = ['node', n.terminal ? 'terminal' : '', visited.has(n.name) ? 'visited' : '', n.name === saga.state ? 'current' : ''].join(' ');
    svg.append(h('svg:g', { class: cls, 'data-state': n.name },
      h('svg:title', {}, n.name === saga.state ? `${n.name} (current)` : n.name),
      h('svg:rect', { x: p.x, y: p.y, width: W, height: H, rx: n.name === '[*]' ? 20 : 6 }),
      h('svg:text', { x: p.x + W / 2, y: p.y + H / 2 + 4, 'text-anchor': 'middle' }, n.name === '[*]' ? 'start' : n.name)));
  }
  svg.append(...later);
  const named = path.map((p) => (p === '[*]' ? 'start' : p));
  const figure = h('figure', { class: 'diagram', tabindex: 0, 'aria-label': 'State diagram (scrolls sideways in a narrow window)' }, svg,
    h('figcaption', { class: 'muted' }, `Path taken: ${named.join(' → ')}. Highlighted: current state and the transitions this saga took.`));
  // In a narrow window, the current state in view.
  const cur = pos[saga.state];
  if (cur) requestAnimationFrame(() => { figure.scrollLeft = Math.max(0, cur.x - PAD); });
  return figure;
}

function timeline(data, audit) {
  const items = [];
  for (const t of data.transitions) {
    items.push({ at: t.at, kind: 'saga', what: `${t.from === '-' ? 'start' : t.from} → ${t.to}`, detail: t.event, actor: t.actor, reason: t.reason || '' });
  }
  for (const o of data.order_history || []) {
    items.push({ at: o.transitioned_at || o.at, kind: 'order', what: `${o.from_status || '—'} → ${o.to_status}`,
      detail: o.reason_code || '', actor: o.actor || '', reason: o.comment || '' });
  }
  for (const a of audit) {
    items.push({ at: a.created_at, kind: 'ops', what: `${a.action} (${a.result})`,
      detail: a.version_before !== null ? `v${a.version_before} → ${a.version_after === null ? '—' : `v${a.version_after}`}` : '', actor: a.actor, reason: a.reason });
  }
  items.sort((x, y) => String(x.at).localeCompare(String(y.at)));
  return h('table', { class: 'timeline' },
    h('thead', {}, h('tr', {}, ['When', 'Kind', 'What', 'Detail', 'Actor', 'Reason'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, items.map((i) => h('tr', { 'data-kind': i.kind }, h('td', {}, when(i.at)), h('td', {}, i.kind),
      h('td', {}, i.what), h('td', { class: 'mono' }, i.detail), h('td', {}, i.actor), h('td', {}, i.reason)))));
}

function simpleTable(rows, columns, empty) {
  if (!rows || rows.length === 0) return h('p', { class: 'muted' }, empty);
  return h('table', {}, h('thead', {}, h('tr', {}, columns.map(([label]) => h('th', { scope: 'col' }, label)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, columns.map(([, f]) => h('td', {}, f(r)))))));
}

function reportView(r, applied) {
  const messages = r.messages || [];
  return h('div', { class: `report${applied ? ' applied' : ''}`, role: 'status' },
    h('strong', {}, applied ? 'Applied. What it did:' : 'Dry run — nothing was written. This is what the action would do:'),
    h('ul', { class: 'consequences' }, (r.consequences || []).map((c) => h('li', {}, c))),
    h('details', {}, h('summary', {}, 'Every write'),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Saga state'), h('dd', {}, `${r.state_before} → ${r.state_after}`),
      h('dt', {}, 'Saga version'), h('dd', {}, `${r.version_before} → ${r.version_after}`),
      h('dt', {}, 'Order status'), h('dd', {}, `${r.order_status_before || '—'} → ${r.order_status_after || '—'}`),
      h('dt', {}, 'Messages'), h('dd', {}, messages.length ? messages.map((m) => h('div', { class: 'mono' },
        `${m.type}${m.command_id ? ` (command ${m.command_id})` : ''}`)) : 'none'),
      h('dt', {}, 'Timers after'), h('dd', {}, (r.timers_after || []).length
        ? r.timers_after.map((t) => h('div', {}, `${t.name} due ${when(t.due_at)}`)) : 'none'),
      h('dt', {}, 'Quarantine after'), h('dd', {}, r.quarantined_after || 'none'),
      r.replayed && r.replayed.length ? [h('dt', {}, 'Replayed'), h('dd', {}, r.replayed.join(', '))] : null)));
}

// The reason typed for a saga, kept while the operator switches between its
// actions or signs in again (never carried to another saga).
const typedReason = { orderId: null, text: '' };

function actionPanel(orderId, saga, actions, reload, described) {
  // Each offered action's label and what it does (from the daemon, index by index).
  const about = (a) => (described || [])[actions.indexOf(a)] || { label: actionLabel(a), description: '' };
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'actions-h' }, h('h2', { id: 'actions-h' }, 'Actions'));
  if (actions.length === 0) {
    panel.append(h('p', { class: 'muted' }, 'The definition allows no operator action in this state.'));
    return panel;
  }
  const work = h('div', {});
  const buttons = h('div', { class: 'actions', role: 'group', 'aria-label': 'Allowed actions' },
    actions.map((a) => h('button', { type: 'button', 'data-action': a.action, title: about(a).description, onclick: () => open(a) },
      about(a).label)));
  panel.append(h('p', { class: 'muted' }, `Offered: what the definition allows in ${saga.state}. Every action is first a dry run; you confirm it after seeing what it would write.`),
    buttons, work);

  function open(a) {
    // The reason typed so far survives switching to another action of this saga.
    const reason = h('textarea', { id: 'reason', required: true, maxlength: 1000, placeholder: 'Why? (recorded in the audit trail)',
      oninput: () => { typedReason.orderId = orderId; typedReason.text = reason.value; } });
    reason.value = typedReason.orderId === orderId ? typedReason.text : '';
    const extra = [];
    let after = null;
    if (a.action === 'reschedule_timer') {
      after = h('input', { id: 'after', value: '5m', size: 8 });
      extra.push(h('label', { for: 'after' }, 'Due after (from now)', after));
    }
    const result = h('div', { 'aria-live': 'polite' });
    const dry = h('button', { type: 'submit', class: 'primary' }, 'Dry run');
    const form = h('form', { 'aria-label': `Action ${about(a).label}`, onsubmit: async (ev) => { ev.preventDefault(); await run(true); } },
      h('h3', {}, about(a).label), h('p', { id: 'action-about' }, about(a).description),
      h('label', { for: 'reason' }, 'Reason', reason), h('div', { class: 'form-row' }, extra, dry), result);
    work.replaceChildren(form);
    reason.focus();

    const body = (dryRun) => {
      const b = { ...a, expected_version: saga.version, reason: reason.value, dry_run: dryRun };
      delete b.at;
      delete b.after;
      if (after) b.after = after.value;
      return b;
    };
    async function run(dryRun) {
      if (!reason.value.trim()) {
        result.replaceChildren(h('p', { class: 'notice bad', role: 'alert' }, 'Say why: a reason is required.'));
        reason.focus();
        return;
      }
      try {
        const r = await api('POST', `/ops/sagas/${orderId}/actions`, body(dryRun));
        if (dryRun) {
          const confirm = h('button', { type: 'button', class: 'danger', id: 'confirm',
            onclick: async () => { confirm.disabled = true; await run(false); } }, `Confirm: ${about(a).label}`);
          const cancel = h('button', { type: 'button', onclick: () => work.replaceChildren() }, 'Close');
          result.replaceChildren(reportView(r, false), h('div', { class: 'actions' }, confirm, cancel));
          confirm.focus();
        } else {
          result.replaceChildren(reportView(r, true));
          toast(`${about(a).label} applied to order ${orderId}.`);
          await reload(`${about(a).label} applied: ${r.state_before} → ${r.state_after}.`);
        }
      } catch (e) {
        if (e.status === 401) return;
        if (e.code === 'stale_version') {
          const now = e.details && e.details.current_version;
          const changes = (e.details && e.details.changes) || [];
          result.replaceChildren(h('div', { class: 'notice warn', role: 'alert', id: 'stale-changes' },
            h('strong', {}, 'The saga moved on — reload. '),
            `You looked at version ${saga.version}; it is at version ${now} now. Nothing was applied. What changed it since:`,
            h('ol', { class: 'changes' }, changes.map((c) => h('li', {},
              `v${c.saga_version}: ${c.event} (${c.from} → ${c.to}) by `, h('strong', {}, c.actor),
              ` at ${clock(new Date(c.at))}`, c.reason ? ` — “${c.reason}”` : ''))),
            ' ', h('button', { type: 'button', onclick: () => reload() }, 'Reload')));
        } else {
          result.replaceChildren(h('p', { class: 'notice bad', role: 'alert' }, `${e.code}: ${e.message}`));
        }
      }
    }
  }
  return panel;
}

async function sagaPage(orderId, flash) {
  const [data, audit] = await Promise.all([
    api('GET', `/ops/sagas/${orderId}`),
    api('GET', `/ops/audit?order_id=${orderId}&limit=200`),
  ]);
  const s = data.saga, def = data.definition, o = data.order;
  // The server's clock, from the saga's age: "due in" stays right on a skewed laptop.
  const serverNow = new Date(s.state_entered_at).getTime() + s.age_in_state_seconds * 1000;
  const reload = async (msg) => { stopPage(); await sagaPage(orderId, msg); };
  const badges = [
    s.stuck ? h('span', { class: 'badge bad' }, 'stuck') : null,
    s.quarantined !== null ? h('span', { class: 'badge bad' }, 'quarantined') : null,
    s.terminal ? h('span', { class: 'badge ok' }, 'terminal') : null,
  ];
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, 'State'), h('dd', {}, s.state, def.current_step ? h('span', { class: 'muted' }, ` (step ${def.current_step})`) : null),
    h('dt', {}, 'Since'), h('dd', {}, when(s.state_entered_at), ' — ', dwellCell(s)),
    h('dt', {}, 'Saga version'), h('dd', {}, String(s.version)),
    h('dt', {}, 'Definition'), h('dd', { id: 'definition-version' }, `version ${s.definition_version}${def.loaded ? '' : ' (not loaded here)'}`,
      data.newer_definition ? h('div', { class: data.newer_definition.verdict.verdict === 'same' ? 'muted' : 'notice warn' },
        data.newer_definition.verdict.verdict === 'same'
          ? `Version ${data.newer_definition.version} is the newest; it would treat this saga the same.`
          : `Version ${data.newer_definition.version} is the newest; it would treat this saga differently: ${
            data.newer_definition.verdict.how.join ? data.newer_definition.verdict.how.join('; ') : data.newer_definition.verdict.how}`) : null),
    h('dt', {}, 'Region'), h('dd', {}, s.tenant_region),
    s.quarantined !== null ? [h('dt', {}, 'Quarantine'), h('dd', { class: 'notice bad' }, s.quarantined)] : null);
  const orderFacts = o ? h('dl', { class: 'facts' },
    h('dt', {}, 'Order status'), h('dd', {}, h('strong', { id: 'order-status' }, o.status)),
    h('dt', {}, 'Customer'), h('dd', {}, o.customer_id || '—'),
    h('dt', {}, 'Total'), h('dd', {}, `${o.total_amount ?? o.total ?? '—'} ${o.currency || ''}`),
    h('dt', {}, 'Created'), h('dd', {}, when(o.created_at)),
    h('dt', {}, 'Order version'), h('dd', {}, String(o.version ?? '—'))) : h('p', { class: 'muted' }, 'No order row.');
  const items = o && o.items ? simpleTable(o.items, [
    ['SKU', (i) => i.sku], ['Quantity', (i) => String(i.qty)], ['Line total', (i) => String(i.line_total)], ['Unit price', (i) => String(i.unit_price)],
  ], 'No items.') : null;
  const timers = simpleTable(data.timers, [
    ['Timer', (t) => t.name], ['Due', (t) => when(t.due_at)],
    ['Due in', (t) => {
      const secs = (new Date(t.due_at).getTime() - serverNow) / 1000;
      return secs >= 0 ? duration(secs) : h('span', { class: 'badge warn' }, `overdue ${duration(-secs)}`);
    }],
  ], 'No pending timer.');
  document.title = `Order ${orderId} (${s.state}) — order-saga ops`;
  const lastReason = [...(data.transitions || [])].reverse().find((t) => t.reason);
  const changed = h('p', { class: 'notice warn', id: 'saga-changed', role: 'status', hidden: true });
  const sections = [
    h('h1', {}, `Order ${orderId}`, h('span', { class: 'muted' }, s.state), badges),
    flash ? h('p', { class: 'notice ok', role: 'status' }, flash) : null,
    changed,
    // Why it is here, before anything else.
    h('div', { class: `notice ${data.needs ? 'bad' : ''}`, id: 'why-here' },
      data.needs ? [h('strong', {}, `${NEED_LABEL[data.needs.need] || data.needs.need}: `), data.needs.why]
        : [h('strong', {}, `${s.state}: `), data.state_description || (s.terminal ? 'done.' : 'in progress.')],
      lastReason ? h('div', { class: 'muted' }, `Last reason: ${lastReason.reason} (${lastReason.event}, ${when(lastReason.at)})`) : null),
    h('div', { class: 'grid2' },
      h('section', { class: 'panel', 'aria-labelledby': 'saga-h' }, h('h2', { id: 'saga-h' }, 'Saga'), facts),
      h('section', { class: 'panel', 'aria-labelledby': 'order-h' }, h('h2', { id: 'order-h' }, 'Order'), orderFacts, items)),
    h('section', { class: 'panel', 'aria-labelledby': 'diagram-h' }, h('h2', { id: 'diagram-h' }, 'State diagram'),
      diagram(def, s, data.transitions)),
    actionPanel(orderId, s, def.actions_allowed_now || [], reload, def.action_descriptions),
    h('section', { class: 'panel', 'aria-labelledby': 'timeline-h' }, h('h2', { id: 'timeline-h' }, 'Timeline'),
      h('p', { class: 'muted' }, 'Saga transitions, order status history and operator actions, oldest first.'),
      timeline(data, audit.audit || [])),
    h('section', { class: 'panel', 'aria-labelledby': 'timers-h' }, h('h2', { id: 'timers-h' }, 'Timers'), timers),
    h('section', { class: 'panel', 'aria-labelledby': 'parked-h' }, h('h2', { id: 'parked-h' }, 'Parked events'),
      simpleTable(data.parked, [['Event', (p) => p.event], ['Id', (p) => h('span', { class: 'mono' }, p.event_id)],
        ['Poison', (p) => (p.poison ? 'yes' : 'no')], ['Error', (p) => p.error || ''], ['Parked', (p) => when(p.parked_at)],
        ['Resolution', (p) => p.resolution || 'unresolved']], 'No parked event.')),
    h('section', { class: 'panel', 'aria-labelledby': 'dlq-h' }, h('h2', { id: 'dlq-h' }, 'Dead letters'),
      simpleTable(data.dead_letters, [['Id', (d) => h('span', { class: 'mono' }, d.event_id)], ['Topic', (d) => d.topic],
        ['Headers', (d) => h('dl', { class: 'facts mono dlq-headers' }, dlqHeaders(d.headers).map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]))],
        ['Written', (d) => when(d.created_at)], ['Published', (d) => when(d.published_at)]], 'Nothing of this order was dead-lettered.')),
    h('section', { class: 'panel', 'aria-labelledby': 'outbox-h' }, h('h2', { id: 'outbox-h' }, 'Unpublished outbox rows'),
      simpleTable(data.outbox_unpublished, [['Type', (r) => r.event_type], ['Topic', (r) => r.topic], ['Written', (r) => when(r.created_at)],
        ['Attempts', (r) => String(r.attempts)], ['Last error', (r) => r.last_error || '']], 'Everything is published.')),
    h('section', { class: 'panel', 'aria-labelledby': 'inbox-h' }, h('h2', { id: 'inbox-h' }, 'Inbox'),
      simpleTable(data.inbox, [['Event', (r) => r.event], ['Id', (r) => h('span', { class: 'mono' }, r.event_id)], ['Source', (r) => r.source],
        ['Outcome', (r) => r.outcome], ['Received', (r) => when(r.received_at)]], 'No inbound event recorded.')),
    h('section', { class: 'panel', 'aria-labelledby': 'audit-h' }, h('h2', { id: 'audit-h' }, 'Audit trail'),
      auditTable(audit.audit || [])),
  ];
  mount(...sections);
  window.scrollTo(0, 0);
  // The page is not redrawn under the operator's hands: it says when the
  // saga has changed since it was loaded, and Reload shows it.
  every(REFRESH_MS, async () => {
    try {
      const now = await api('GET', `/ops/sagas/${orderId}`, undefined, true);
      if (now.saga.version !== s.version) {
        changed.replaceChildren(`This saga changed since the page was loaded: now ${now.saga.state} at version ${now.saga.version}. `,
          h('button', { type: 'button', onclick: () => reload() }, 'Reload'));
        changed.hidden = false;
      }
    } catch (_) { /* the banner says when the daemon is down */ }
  });
}

/// A dead letter's headers, the reason first, then where it came from.
function dlqHeaders(headers) {
  const first = ['dlq_error', 'dlq_error_kind', 'dlq_source_topic', 'dlq_source_partition', 'dlq_source_offset'];
  const entries = Object.entries(headers || {});
  const rank = ([k]) => (first.includes(k) ? first.indexOf(k) : first.length);
  return entries.sort((a, b) => rank(a) - rank(b) || a[0].localeCompare(b[0]));
}

function auditTable(rows) {
  return simpleTable(rows, [['When', (a) => when(a.created_at)], ['Order', (a) => a.order_id === null ? '—' : h('a', { href: `#/sagas/${a.order_id}` }, String(a.order_id))],
    ['Action', (a) => a.action], ['Result', (a) => h('span', { class: `badge ${a.result === 'applied' ? 'ok' : 'bad'}` }, a.result)],
    ['Actor', (a) => a.actor], ['Reason', (a) => a.reason],
    ['Job', (a) => (a.job_id ? h('a', { href: `#/bulk/jobs/${a.job_id}`, title: a.job_id }, a.job_id.slice(0, 8)) : '')],
    ['Detail', (a) => h('span', { class: 'mono' }, a.detail || '')]],
  'No operator action recorded.');
}

const AUDIT_FILTERS = ['order_id', 'job_id', 'actor', 'before_id'];

async function auditPage(params) {
  const filters = {};
  for (const k of AUDIT_FILTERS) if (params[k]) filters[k] = params[k];
  const input = (name, label, ph) => h('label', { for: `a-${name}` }, label,
    h('input', { id: `a-${name}`, name, value: filters[name] || '', placeholder: ph, size: 14 }));
  const form = h('form', { class: 'filters', 'aria-label': 'Audit filters', onsubmit: (ev) => {
    ev.preventDefault();
    const f = {};
    for (const k of ['order_id', 'job_id', 'actor']) if (form.elements[k].value.trim()) f[k] = form.elements[k].value.trim();
    location.hash = hashFor('/audit', f);
  } }, h('div', { class: 'form-row' }, input('order_id', 'Order', '42'), input('job_id', 'Bulk job', 'job id'),
    input('actor', 'Actor', 'alice'), h('button', { type: 'submit', class: 'primary' }, 'Apply filters')));
  const data = await api('GET', `/ops/audit?${new URLSearchParams({ ...filters, limit: '100' })}`);
  const { before_id: _, ...first } = filters;
  const pager = h('div', { class: 'pager' },
    filters.before_id ? h('a', { class: 'button', href: hashFor('/audit', first) }, '⇤ Newest') : null,
    data.next_before_id ? h('a', { class: 'button', rel: 'next', href: hashFor('/audit', { ...filters, before_id: String(data.next_before_id) }) }, 'Older →') : null,
    h('span', { class: 'muted' }, `${(data.audit || []).length} shown, newest first`));
  mount(h('h1', {}, 'Audit trail'), h('p', { class: 'muted' }, 'Operator actions, applied and refused, newest first. A bulk job\'s actions carry its id.'),
    form, h('section', { class: 'panel' }, auditTable(data.audit || []), pager));
}

// ---------------------------------------------------------------- definitions

/** A candidate definition file previewed against every saga in flight (read-only). */
async function definitionsPage() {
  const o = await api('GET', '/ops/overview');
  const text = h('textarea', { id: 'definition-text', rows: 14, spellcheck: 'false', class: 'mono',
    placeholder: 'Paste a definition file (TOML), or choose one' });
  const file = h('input', { id: 'definition-file', type: 'file', accept: '.toml,text/plain',
    onchange: async () => { if (file.files[0]) text.value = await file.files[0].text(); } });
  const out = h('div', { id: 'definition-preview', 'aria-live': 'polite' });
  const form = h('form', { 'aria-label': 'Preview a definition', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!text.value.trim()) {
      out.replaceChildren(h('p', { class: 'notice bad', role: 'alert' }, 'Paste or choose a definition file first.'));
      return;
    }
    try {
      const r = await api('POST', '/ops/definitions/preview', { definition: text.value, sample: 20 });
      const states = Object.entries(r.states);
      out.replaceChildren(h('div', { class: 'report', role: 'status' },
        h('strong', {}, r.divergent === 0
          ? `No saga in flight would behave differently under version ${r.version} (${r.in_flight} judged).`
          : `${r.divergent} of ${r.in_flight} sagas in flight would behave differently under version ${r.version}.`),
        simpleTable(states, [['State', ([s]) => h('a', { href: hashFor('/sagas', { state: s }) }, s)],
          ['In flight', ([, c]) => String(c.in_flight)], ['Would differ', ([, c]) => String(c.divergent)]], 'No saga in flight.'),
        r.sample.length ? h('h2', {}, 'Sagas that would differ (first 20)') : null,
        h('ul', { id: 'definition-sample' }, r.sample.map((d) => h('li', {},
          h('a', { href: `#/sagas/${d.order_id}` }, `Order ${d.order_id}`), ` (v${d.definition_version}, ${d.state}): `,
          d.how.verdict === 'past_diverges'
            ? `its past would have gone another way at transition ${d.how.at + 1}: ${d.how.how}`
            : `from its current state: ${d.how.how.join('; ')}`,
          h('div', { class: 'muted mono' }, d.timeline.join(' · ')))))));
    } catch (e) {
      if (e.status === 401) return;
      const errors = (e.details && e.details.errors) || [];
      out.replaceChildren(h('div', { class: 'notice bad', role: 'alert' }, h('p', {}, `${e.code}: ${e.message}`),
        errors.length ? h('ul', {}, errors.map((x) => h('li', {}, `line ${x.line}: ${x.message}`))) : null));
    }
  } },
  h('label', { for: 'definition-file' }, 'Definition file', file),
  h('label', { for: 'definition-text' }, 'Or its text', text),
  h('div', { class: 'form-row' }, h('button', { type: 'submit', class: 'primary' }, 'Preview against the sagas in flight')));
  mount(h('h1', {}, 'Definitions'),
    h('p', { class: 'muted' }, 'A candidate definition, judged against every saga in flight before it is deployed: each saga\'s recorded transitions replayed through it, and what its current state would do next. Nothing is written. The same as order-saga sagas preview.'),
    versionsPanel(o.versions || []),
    h('section', { class: 'panel', 'aria-label': 'Preview' }, form, out));
}

// ---------------------------------------------------------------- bulk

const BULK_ACTIONS = [
  ['retry_step', 'Retry the current step'], ['cancel', 'Cancel (compensate)'], ['release', 'Release from quarantine'],
  ['skip_poison', 'Skip the poison event, then release'], ['fire_timer', 'Fire a timer'], ['cancel_timer', 'Cancel a timer'],
  ['force', 'Deliver a manual event'], ['migrate', 'Move to a newer definition version'],
];

/** A bulk action's words, not its identifier. */
function bulkLabel(action) {
  const found = BULK_ACTIONS.find(([v]) => v === action);
  return found ? found[1].toLowerCase() : action.replace(/_/g, ' ');
}

async function bulkPage(params) {
  await ensureStates();
  const mayRun = session.role === 'admin';
  const filters = {};
  for (const k of FILTERS) if (params[k]) filters[k] = params[k];
  const out = h('div', { 'aria-live': 'polite' });
  const jobsList = h('div', { id: 'bulk-jobs' });
  const actionSel = h('select', { id: 'bulk-action' }, BULK_ACTIONS.map(([v, l]) => h('option', { value: v, selected: v === params.action }, l)));
  const arg = h('input', { id: 'bulk-arg', placeholder: 'timer, event or version', size: 18, value: params.to_version || '' });
  const reason = h('textarea', { id: 'bulk-reason', required: true, maxlength: 1000, placeholder: 'Why? (recorded for every saga)' });
  const limit = h('input', { id: 'bulk-limit', type: 'number', min: 1, max: 10000, value: 1000, size: 6 });
  // "Apply filters" only records the selection in the address (no re-render:
  // the action and the reason typed so far stay); the preview and the job
  // always use the filters as the form shows them.
  const filterEl = filterForm(filters, (f) => { history.replaceState(null, '', hashFor('/bulk', f)); }, 'Apply filters');
  const actionBody = (dryRun) => {
    const a = { action: actionSel.value };
    if (a.action === 'fire_timer' || a.action === 'cancel_timer') a.timer = arg.value.trim();
    if (a.action === 'force') a.event = arg.value.trim();
    if (a.action === 'migrate') a.to_version = Number(arg.value.trim());
    return { filter: readFilters(filterEl), action: a, reason: reason.value, dry_run: dryRun, limit: Number(limit.value) || 1000 };
  };
  const selection = (f) => (Object.keys(f).length ? Object.entries(f).map(([k, v]) => `${k}=${v}`).join(', ') : 'every saga in flight');
  // The body the last preview was made with: the job starts with exactly it.
  let previewed = null;
  const preview = h('button', { type: 'submit', class: 'primary', disabled: !mayRun }, 'Preview');
  const form = h('form', { 'aria-label': 'Bulk action', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!reason.value.trim()) {
      out.replaceChildren(h('p', { class: 'notice bad', role: 'alert' }, 'Say why: a reason is required.'));
      reason.focus();
      return;
    }
    try {
      const body = actionBody(true);
      const p = await api('POST', '/ops/bulk', body);
      previewed = body;
      const allRefused = p.checked > 0 && p.would_refuse === p.checked && p.checked === p.would_act_on;
      const refusals = p.would_refuse
        ? h('div', { class: 'notice bad', id: 'bulk-refusals' },
          h('p', {}, `${p.would_refuse} of the ${p.checked} checked would be refused:`),
          h('ul', {}, p.refusals.map((r) => h('li', {}, `${r.count} × ${r.reason}`))))
        : h('p', { id: 'bulk-refusals' }, `All ${p.checked} checked accept ${p.action} now.`);
      const start = h('button', { type: 'button', class: 'danger', id: 'bulk-start', disabled: p.would_act_on === 0 || allRefused,
        onclick: async () => {
          // What is on screen must be what was previewed.
          if (JSON.stringify(actionBody(true)) !== JSON.stringify(previewed)) {
            out.replaceChildren(h('p', { class: 'notice bad', role: 'alert' },
              'The selection, action or reason changed since the preview: preview again.'));
            return;
          }
          start.disabled = true;
          await runJob();
        } }, `Start: ${bulkLabel(p.action)} on ${p.would_act_on} sagas`);
      out.replaceChildren(h('div', { class: 'report', role: 'status' },
        h('strong', {}, `Preview: ${p.matched} match, the job would act on ${p.would_act_on}.`),
        h('p', { id: 'bulk-selection' }, `Selection: ${selection(body.filter)}.`),
        refusals,
        h('p', {}, 'Sample (each acted on at the version shown; a saga that moves first is refused as stale):'),
        h('p', { class: 'mono', id: 'bulk-sample' }, p.sample.map((x, i) => [i ? ', ' : '', h('a', { href: `#/sagas/${x.order_id}` }, `${x.order_id}@v${x.version}`)]))),
      start);
      start.focus();
    } catch (e) {
      if (e.status !== 401) out.replaceChildren(h('p', { class: 'notice bad', role: 'alert' }, `${e.code}: ${e.message}`));
    }
  } },
  h('div', { class: 'form-row' }, h('label', { for: 'bulk-action' }, 'Action', actionSel), h('label', { for: 'bulk-arg' }, 'Timer / event / version', arg),
    h('label', { for: 'bulk-limit' }, 'At most', limit)),
  h('label', { for: 'bulk-reason' }, 'Reason', reason), h('div', { class: 'form-row' }, preview));

  async function runJob() {
    let job;
    try {
      job = await api('POST', '/ops/bulk', { ...previewed, dry_run: false });
    } catch (e) {
      if (e.status !== 401) out.append(h('p', { class: 'notice bad', role: 'alert' }, `${e.code}: ${e.message}`));
      return;
    }
    location.hash = `#/bulk/jobs/${job.job_id}`;
  }

  mount(h('h1', {}, 'Bulk action'),
    h('p', { class: 'muted' }, 'Select sagas by filter, preview how many and which, then start the job. Jobs are stored: every replica shows them, they can be stopped, and one whose replica stops is resumed by another.'),
    mayRun ? null : h('p', { class: 'notice bad', id: 'bulk-role' },
      `Bulk actions need the admin role (ops:admin); you are signed in as ${session.role}. You can still build a selection and share its address.`),
    h('section', { class: 'panel', 'aria-label': 'Selection' }, filterEl),
    h('section', { class: 'panel', 'aria-label': 'Bulk job' }, form, out),
    h('h2', {}, 'Recent jobs'), jobsList);
  const refreshJobs = async () => {
    const { jobs } = await api('GET', '/ops/jobs?limit=20');
    jobsList.replaceChildren(simpleTable(jobs, [
      ['Job', (j) => h('a', { href: `#/bulk/jobs/${j.job_id}` }, j.job_id.slice(0, 8))],
      ['Action', (j) => j.action],
      ['State', (j) => h('span', { class: `badge ${j.state === 'running' ? 'warn' : j.failed ? 'bad' : 'ok'}` }, j.state)],
      ['Progress', (j) => `${j.done} of ${j.total} (${j.succeeded} applied, ${j.failed} refused)`],
      ['By', (j) => j.actor],
      ['Started', (j) => new Date(j.created_at).toLocaleString()],
    ], 'No bulk job yet.'));
  };
  await refreshJobs();
  every(REFRESH_MS, () => refreshJobs().catch(() => {}));
}

/** One bulk job: progress, each saga's result, and Stop while it runs. */
async function jobPage(jobId) {
  const meta = h('p', { id: 'job-meta' });
  const bar = h('progress', { id: 'bulk-progress', max: 1, value: 0, 'aria-label': 'Bulk job progress' });
  const counts = h('p', { id: 'bulk-counts' });
  const note = h('p', { id: 'job-note', hidden: true });
  const results = h('div', {});
  const stop = h('button', { type: 'button', class: 'danger', id: 'job-stop', hidden: true, onclick: async () => {
    stop.disabled = true;
    try {
      await api('POST', `/ops/jobs/${jobId}/cancel`);
      toast('Stop requested: the job stops before its next saga.');
      await poll();
    } catch (e) {
      stop.disabled = false;
      if (e.status !== 401) toast(`${e.code}: ${e.message}`);
    }
  } }, 'Stop this job');
  const poll = async () => {
    const st = await api('GET', `/ops/jobs/${jobId}`);
    meta.replaceChildren(h('strong', {}, st.action), ` by ${st.actor}, started ${new Date(st.created_at).toLocaleString()}. Reason: `,
      h('em', {}, st.reason), '. Selection: ',
      h('span', { class: 'mono' }, Object.entries(st.selection || {}).map(([k, v]) => `${k}=${v}`).join(', ') || 'every saga in flight'), '.');
    bar.max = Math.max(st.total, 1);
    bar.value = st.done;
    const allRefused = st.finished && st.succeeded === 0 && st.failed > 0;
    const ending = st.state === 'cancelled' ? ` — stopped by ${st.cancel_requested_by}; the rest was not acted on.`
      : allRefused ? ' — finished: nothing was applied.' : st.finished ? ' — finished.'
        : st.cancel_requested_by ? ` — stopping (requested by ${st.cancel_requested_by})…` : '…';
    counts.textContent = `${st.done} of ${st.total} done: ${st.succeeded} applied, ${st.failed} refused${ending}`;
    counts.className = allRefused ? 'notice bad' : '';
    const stalled = !st.finished && st.heartbeat_age_seconds > 30;
    note.hidden = !stalled && !st.resumed;
    note.className = stalled ? 'notice bad' : 'muted';
    note.textContent = stalled
      ? `Its runner has not reported for ${Math.round(st.heartbeat_age_seconds)} s (a replica stopped?): another replica takes it over.`
      : `Resumed ${st.resumed} time(s) by another replica after its runner stopped; no saga was acted on twice.`;
    stop.hidden = st.finished || session.role !== 'admin' || Boolean(st.cancel_requested_by);
    results.replaceChildren(simpleTable(st.results, [['Order', (r) => h('a', { href: `#/sagas/${r.order_id}` }, String(r.order_id))],
      ['Result', (r) => h('span', { class: `badge ${r.result === 'applied' ? 'ok' : r.result === 'refused' ? 'bad' : ''}` }, r.result)],
      ['Error', (r) => r.error || '']], 'No saga in this job.'));
    return st.finished;
  };
  mount(h('h1', {}, `Bulk job ${jobId.slice(0, 8)}`), h('p', {}, h('a', { href: '#/bulk' }, '← Bulk actions'), ' · ',
    h('a', { href: hashFor('/audit', { job_id: jobId }) }, 'Its actions in the audit trail')),
    h('section', { class: 'panel', 'aria-label': 'Job' }, meta, bar, counts, note, h('div', { class: 'form-row' }, stop)),
    h('h2', {}, 'Sagas'), results);
  if (!(await poll())) {
    const id = setInterval(async () => {
      try { if (await poll()) clearInterval(id); } catch (_) { /* the banner says when the daemon is down */ }
    }, 1000);
    cleanup.push(() => clearInterval(id));
  }
}

// ---------------------------------------------------------------- start

document.addEventListener('DOMContentLoaded', async () => {
  try {
    const t = localStorage.getItem('order-saga-theme');
    if (t === 'light' || t === 'dark') setTheme(t);
  } catch (_) { /* private mode */ }
  document.getElementById('theme').addEventListener('click', () => setTheme(currentTheme() === 'dark' ? 'light' : 'dark'));
  document.getElementById('signout').addEventListener('click', signOut);
  document.getElementById('refresh').addEventListener('click', () => route());
  window.addEventListener('hashchange', route);
  // Back from the identity provider without a session: say why, once.
  const query = new URLSearchParams(location.search);
  const failed = query.get('sign_in_error');
  if (failed !== null) history.replaceState(null, '', location.pathname + location.hash);
  try {
    startSession(await api('GET', '/ops/ui/session'));
  } catch (e) {
    if (e.details && e.details.sign_in) signInMethods = e.details.sign_in;
    showSignIn(failed === null ? undefined : (SIGN_IN_ERRORS[failed] || 'The sign-in failed. Sign in again.'));
  }
});
