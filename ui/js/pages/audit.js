// Admin: the audit trail with filters and pagination; CSV export (the server's
// /api/audit/export, with the same filters).

import { api, qs, download } from '../api.js';
import { t } from '../i18n.js';
import { h, clear, field, formatDate, saveBlob, toast, fill, add } from '../dom.js';
import { setQuery, reportError, describeError } from '../app.js';

const PAGE_SIZE = 50;
const ACTIONS = ['LOGIN', 'LOGIN_FAILED', 'LOGOUT', 'REFRESH', 'REFRESH_REUSE', 'CREATE', 'UPDATE', 'DELETE', 'IMPORT', 'EXPORT',
  'PASSWORD_CHANGE', 'SESSION_REVOKE', 'ACCESS_DENIED', 'TOKEN_CREATE', 'TOKEN_REVOKE', 'REGISTRATION_FAILED'];
export async function render(main, _params, query) {
  const f = { action: query.get('action') || '', user_id: query.get('user_id') || '', from: query.get('from') || '', to: query.get('to') || '' };
  let page = Math.max(1, parseInt(query.get('page') || '1', 10) || 1);
  const action = h('select', { id: 'audit-action' }, h('option', { value: '' }, t('audit.all')), ACTIONS.map((a) => h('option', { value: a, selected: a === f.action }, a)));
  const user = h('input', { type: 'number', min: 1, id: 'audit-user', value: f.user_id });
  const from = h('input', { type: 'date', id: 'audit-from', value: f.from });
  const to = h('input', { type: 'date', id: 'audit-to', value: f.to });
  const tbody = h('tbody', {});
  const pager = h('div', { class: 'pager' });
  const count = h('p', { class: 'muted', 'aria-live': 'polite' });
  // The API's `to` is exclusive; the date picked here is included.
  const nextDay = (d) => { const x = new Date(`${d}T00:00:00Z`); x.setUTCDate(x.getUTCDate() + 1); return x.toISOString().slice(0, 10); };
  const filters = () => ({ action: action.value, user_id: user.value, from: from.value, to: to.value ? nextDay(to.value) : '' });

  async function load() {
    setQuery({ action: action.value, user_id: user.value, from: from.value, to: to.value, page: page > 1 ? page : '' });
    try {
      const data = await api.get(`/api/audit${qs({ ...filters(), page, page_size: PAGE_SIZE })}`);
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      count.textContent = t('audit.count', { n: data.total });
      fill(tbody, data.items.length ? data.items.map((e) => h('tr', {},
        h('td', {}, formatDate(e.at)), h('td', {}, e.actor_email || t('audit.system'), e.user_id ? h('div', { class: 'hint' }, `#${e.user_id}`) : null),
        h('td', {}, e.action), h('td', {}, e.outcome), h('td', {}, [e.resource_type, e.resource_id].filter(Boolean).join(' ') || '—'),
        h('td', { class: 'wide' }, e.ip || '—'), h('td', { class: 'wide details' }, h('code', {}, JSON.stringify(e.details))))) :
        h('tr', {}, h('td', { colspan: 7, class: 'muted' }, t('audit.none'))));
      fill(pager, 
        h('button', { type: 'button', class: 'secondary', disabled: page <= 1, onclick: () => { page--; load(); } }, t('pager.prev')),
        h('span', {}, t('pager.page', { page, pages })),
        h('button', { type: 'button', class: 'secondary', disabled: page >= pages, onclick: () => { page++; load(); } }, t('pager.next')));
    } catch (e) {
      fill(tbody, h('tr', {}, h('td', { colspan: 7, class: 'error' }, describeError(e))));
    }
  }

  async function exportCsv() {
    try {
      toast(t('export.preparing'));
      const { blob, filename } = await download('GET', `/api/audit/export${qs({ ...filters(), format: 'csv' })}`, undefined, 'audit.csv');
      saveBlob(blob, filename);
      toast(t('export.done', { name: filename }));
    } catch (e) { reportError(e); }
  }

  const form = h('form', { class: 'toolbar', role: 'search' },
    h('div', {}, field(t('audit.action'), action)), h('div', {}, field(t('audit.user'), user)),
    h('div', {}, field(t('audit.from'), from)), h('div', {}, field(t('audit.to'), to)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('audit.filter')),
      h('button', { type: 'button', class: 'secondary', id: 'audit-csv', onclick: exportCsv }, t('audit.csv'))));
  form.addEventListener('submit', (e) => { e.preventDefault(); page = 1; load(); });
  add(main, h('h1', {}, t('audit.title')), form, count,
    h('div', { class: 'table-wrap' }, h('table', { id: 'audit' }, h('thead', {}, h('tr', {}, h('th', {}, t('audit.at')), h('th', {}, t('audit.actor')),
      h('th', {}, t('audit.action')), h('th', {}, t('audit.outcome')), h('th', {}, t('audit.resource')), h('th', { class: 'wide' }, 'IP'),
      h('th', { class: 'wide' }, t('audit.details')))), tbody)), pager);
  await load();
}
