// The console's shell: session start, hash routing, the top bar, the session watch.

import { api, onSessionEnd, setCsrf, refresh, request } from './api.js';
import { t, lang, setLang, LANGS } from './i18n.js';
import { h, clear, toast, fill, add } from './dom.js';

export const state = {
  user: null,
  /// Shown once on the sign-in page (why the session ended).
  notice: null,
  /// Where to go after signing in.
  next: null,
  /// Whether Orthanc Explorer is reachable on this origin (plugin deployments).
  explorer: false,
  statuses: null,
};

const PAGES = [
  [/^\/login$/, () => import('./pages/login.js'), false],
  [/^\/patients$/, () => import('./pages/patients.js'), false],
  [/^\/patients\/(\d+)$/, () => import('./pages/patient.js'), false],
  [/^\/import$/, () => import('./pages/import.js'), false],
  [/^\/sessions$/, () => import('./pages/sessions.js'), false],
  [/^\/profile$/, () => import('./pages/profile.js'), false],
  [/^\/admin\/users$/, () => import('./pages/users.js'), true],
  [/^\/admin\/groups$/, () => import('./pages/groups.js'), true],
  [/^\/admin\/audit$/, () => import('./pages/audit.js'), true],
];

export function isAdmin() { return state.user && state.user.role === 'admin'; }

export function go(path) {
  if (location.hash === `#${path}`) route();
  else location.hash = path;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/patients';
  const [path, search] = raw.split('?');
  return { path, query: new URLSearchParams(search || '') };
}

/// Replaces the query of the current page without a new history entry or re-render.
export function setQuery(params) {
  const { path } = parseHash();
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
  const s = p.toString();
  history.replaceState(null, '', `#${path}${s ? `?${s}` : ''}`);
}

export async function statuses() {
  if (!state.statuses) state.statuses = await api.get('/api/patients/statuses');
  return state.statuses;
}

let timers = [];

function stopWatch() {
  timers.forEach(clearInterval);
  timers = [];
}

/// While the page is open: refresh the access token before it expires, and notice a
/// revoked session within a minute (or at once when the tab becomes visible again).
function startWatch() {
  stopWatch();
  timers.push(setInterval(() => { refresh(); }, 10 * 60 * 1000));
  timers.push(setInterval(() => { checkSession(); }, 60 * 1000));
}

async function checkSession() {
  if (!state.user) return;
  try {
    const me = await api.get('/api/auth/me');
    setCsrf(me.csrf_token);
  } catch (_) { /* a 401 already ended the session */ }
}

document.addEventListener('visibilitychange', () => { if (!document.hidden) checkSession(); });

onSessionEnd((reason) => {
  if (!state.user) return;
  state.user = null;
  stopWatch();
  clear(document.getElementById('toast'));
  state.notice = reason === 'signed_out' ? null : t('session.ended');
  const { path } = parseHash();
  if (path !== '/login') state.next = location.hash;
  go('/login');
});

/// After a successful sign-in (the login page calls it).
export async function signedIn(user, csrf) {
  state.user = user;
  setCsrf(csrf);
  state.notice = null;
  startWatch();
  probeExplorer();
  const next = state.next && !state.next.startsWith('#/login') ? state.next.slice(1) : '/patients';
  state.next = null;
  go(next);
}

export async function signOut() {
  try { await request('POST', '/api/auth/logout', { noRefresh: true }); } catch (_) { /* ended anyway */ }
  state.user = null;
  stopWatch();
  go('/login');
}

async function probeExplorer() {
  state.explorer = false;
  if (!isAdmin()) return;
  try {
    const r = await fetch('/app/explorer.html', { credentials: 'same-origin' });
    state.explorer = r.ok;
  } catch (_) { state.explorer = false; }
  renderChrome(parseHash().path);
}

function navLink(path, label, current) {
  const active = current === path || (path !== '/' && current.startsWith(`${path}/`));
  return h('a', { href: `#${path}`, 'aria-current': active ? 'page' : null }, label);
}

function langSelect(onChange) {
  const sel = h('select', { 'aria-label': t('lang.choose'), onchange: (e) => { setLang(e.target.value); onChange(); } },
    LANGS.map(([code, name]) => h('option', { value: code, selected: code === lang() }, name)));
  return sel;
}

function renderChrome(path) {
  const bar = document.getElementById('topbar');
  const nav = clear(document.getElementById('nav'));
  const account = clear(document.getElementById('account'));
  document.documentElement.lang = lang();
  document.querySelector('.skip').textContent = t('skip');
  if (!state.user) { bar.hidden = true; return; }
  bar.hidden = false;
  nav.setAttribute('aria-label', t('nav.main'));
  add(nav, navLink('/patients', t('nav.patients'), path), navLink('/import', t('nav.import'), path));
  if (isAdmin()) {
    add(nav, navLink('/admin/users', t('nav.users'), path), navLink('/admin/groups', t('nav.groups'), path),
      navLink('/admin/audit', t('nav.audit'), path));
    if (state.explorer) add(nav, h('a', { href: '/app/explorer.html', target: '_blank', rel: 'noopener' }, t('nav.explorer')));
  }
  const name = [state.user.first_name, state.user.last_name].filter(Boolean).join(' ') || state.user.email;
  add(account, 
    h('span', { class: 'who' }, name),
    navLink('/profile', t('nav.profile'), path),
    navLink('/sessions', t('nav.sessions'), path),
    langSelect(() => route()),
    h('button', { class: 'link', type: 'button', id: 'signout', onclick: signOut }, t('nav.signout')),
  );
}

let rendering = 0;

export async function route() {
  const { path, query } = parseHash();
  const entry = PAGES.find(([re]) => re.test(path));
  if (!entry) { go('/patients'); return; }
  if (!state.user && path !== '/login') {
    state.next = location.hash;
    go('/login');
    return;
  }
  if (state.user && path === '/login') { go('/patients'); return; }
  const [re, load, adminOnly] = entry;
  if (adminOnly && !isAdmin()) { go('/patients'); return; }
  const ticket = ++rendering;
  renderChrome(path);
  const main = document.getElementById('main');
  try {
    const page = await load();
    if (ticket !== rendering) return;
    clear(main);
    await page.render(main, path.match(re).slice(1), query);
    if (ticket !== rendering) return;
    const h1 = main.querySelector('h1');
    document.title = `${h1 ? h1.textContent : ''} — Cohort`;
    main.focus({ preventScroll: true });
  } catch (e) {
    if (ticket !== rendering || e.status === 401) return;
    fill(main, h('h1', {}, t('error.title')), h('p', { class: 'alert', role: 'alert' }, describeError(e)));
  }
}

/// A sentence for an API error.
export function describeError(e) {
  if (!e || !e.code) return t('error.network');
  const known = t(`err.${e.code}`, { retry: e.retryAfter ? Math.ceil(e.retryAfter / 60) : 1 }, null);
  return known || e.message || e.code;
}

export function reportError(e) {
  if (e && e.status === 401) return;
  toast(describeError(e), true);
}

async function boot() {
  try {
    // A silent refresh happens here when the access token expired but the session lives.
    const r = await fetch('/api/auth/me', { credentials: 'same-origin', cache: 'no-store' });
    let me = r.ok ? await r.json() : null;
    if (!me && document.cookie.includes('csrf_token=') && (await refresh())) {
      const again = await fetch('/api/auth/me', { credentials: 'same-origin', cache: 'no-store' });
      me = again.ok ? await again.json() : null;
    }
    if (me) {
      state.user = me;
      setCsrf(me.csrf_token);
      startWatch();
      probeExplorer();
    }
  } catch (_) { /* offline: the sign-in page says so when used */ }
  window.addEventListener('hashchange', route);
  route();
}

boot();
