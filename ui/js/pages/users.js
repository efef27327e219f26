// Admin: accounts (search, create, role/status/group, delete).

import { api, qs } from '../api.js';
import { t } from '../i18n.js';
import { h, clear, field, select, debounce, formatDate, toast, fill, add } from '../dom.js';
import { state as app, reportError, describeError } from '../app.js';
import { groups } from './groups-cache.js';

const PAGE_SIZE = 25;

export async function render(main) {
  const groupList = await groups();
  const groupOptions = [['', t('users.nogroup')], ...groupList.map((g) => [g.id, g.name])];
  const roles = [['user', t('role.user')], ['admin', t('role.admin')]];
  const statusesOf = [['active', t('users.active')], ['inactive', t('users.inactive')]];
  const search = h('input', { type: 'search', id: 'user-search', maxlength: 100 });
  const tbody = h('tbody', {});
  const pager = h('div', { class: 'pager' });
  let page = 1;

  function row(u) {
    const role = select(roles, u.role, { 'aria-label': t('users.role.of', { email: u.email }) });
    const status = select(statusesOf, u.status, { 'aria-label': t('users.status.of', { email: u.email }) });
    const group = select(groupOptions, u.group_id ?? '', { 'aria-label': t('users.group.of', { email: u.email }) });
    const save = h('button', { type: 'button', class: 'secondary' }, t('save'));
    save.addEventListener('click', async () => {
      try {
        await api.put(`/api/users/${u.id}`, { role: role.value, status: status.value, group_id: group.value === '' ? null : Number(group.value) });
        toast(t('saved'));
      } catch (e) { reportError(e); load(); }
    });
    const del = h('button', { type: 'button', class: 'danger', disabled: app.user && app.user.id === u.id }, t('delete'));
    del.addEventListener('click', async () => {
      if (!window.confirm(t('users.delete.confirm', { email: u.email }))) return;
      try { await api.del(`/api/users/${u.id}`); toast(t('saved')); load(); } catch (e) { reportError(e); }
    });
    const name = [u.first_name, u.last_name].filter(Boolean).join(' ');
    return h('tr', { 'data-user': u.id }, h('td', {}, u.email, name ? h('div', { class: 'hint' }, name) : null),
      h('td', {}, role), h('td', {}, status), h('td', {}, group), h('td', { class: 'wide' }, formatDate(u.created_at)),
      h('td', {}, h('div', { class: 'actions' }, save, del)));
  }

  let seq = 0;
  async function load() {
    const mine = ++seq;
    try {
      const data = await api.get(`/api/users${qs({ q: search.value.trim(), page, page_size: PAGE_SIZE })}`);
      if (mine !== seq) return;
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      fill(tbody, data.items.map(row));
      fill(pager, 
        h('button', { type: 'button', class: 'secondary', disabled: page <= 1, onclick: () => { page--; load(); } }, t('pager.prev')),
        h('span', {}, t('pager.page', { page, pages })),
        h('button', { type: 'button', class: 'secondary', disabled: page >= pages, onclick: () => { page++; load(); } }, t('pager.next')));
    } catch (e) {
      fill(tbody, h('tr', {}, h('td', { colspan: 6, class: 'error' }, describeError(e))));
    }
  }
  const typed = debounce(() => { page = 1; load(); }, 250);
  for (const ev of ['input', 'change', 'search']) search.addEventListener(ev, typed);

  const email = h('input', { type: 'email', required: true, maxlength: 254, autocomplete: 'off' });
  const password = h('input', { type: 'password', required: true, minlength: 12, maxlength: 72, autocomplete: 'new-password' });
  const first = h('input', { type: 'text', maxlength: 100 });
  const last = h('input', { type: 'text', maxlength: 100 });
  const role = select(roles, 'user');
  const group = select(groupOptions, '');
  const form = h('form', { class: 'card', id: 'user-form' }, h('h2', {}, t('users.new')),
    h('div', { class: 'grid2' }, field(t('profile.email'), email), field(t('login.password'), password, t('profile.new.hint')),
      field(t('patient.first'), first), field(t('patient.last'), last), field(t('users.role'), role), field(t('patients.group'), group)),
    h('button', { type: 'submit' }, t('create')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.post('/api/users', { email: email.value.trim(), password: password.value, role: role.value,
        group_id: group.value === '' ? null : Number(group.value), first_name: first.value.trim() || null, last_name: last.value.trim() || null });
      form.reset();
      toast(t('saved'));
      load();
    } catch (err) { reportError(err); }
  });

  add(main, h('h1', {}, t('users.title')),
    h('div', { class: 'toolbar', role: 'search' }, h('div', { class: 'grow' }, h('label', { for: 'user-search' }, t('users.search')), search)),
    h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, t('profile.email')), h('th', {}, t('users.role')),
      h('th', {}, t('users.status')), h('th', {}, t('patients.group')), h('th', { class: 'wide' }, t('sessions.created')),
      h('th', {}, h('span', { class: 'sr-only' }, t('actions'))))), tbody)),
    pager, form);
  await load();
}
