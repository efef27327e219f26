// Admin: research groups (create, rename, delete when empty).

import { api } from '../api.js';
import { t } from '../i18n.js';
import { h, field, formatDate, toast, add } from '../dom.js';
import { reportError, go } from '../app.js';
import { groups, forget } from './groups-cache.js';

export async function render(main) {
  const list = await groups(true);
  const name = h('input', { type: 'text', id: 'group-name', maxlength: 100, required: true });
  const form = h('form', { class: 'card', id: 'group-form' }, h('h2', {}, t('groups.new')), field(t('groups.name'), name), h('button', { type: 'submit' }, t('create')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try { await api.post('/api/groups', { name: name.value.trim() }); forget(); toast(t('saved')); go('/admin/groups'); } catch (err) { reportError(err); }
  });
  const rows = list.map((g) => {
    const input = h('input', { type: 'text', value: g.name, maxlength: 100, 'aria-label': t('groups.rename.label', { name: g.name }) });
    return h('tr', { 'data-group': g.id },
      h('td', {}, input), h('td', { class: 'num' }, g.members), h('td', { class: 'wide' }, formatDate(g.created_at)),
      h('td', {}, h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: async () => {
          try { await api.put(`/api/groups/${g.id}`, { name: input.value.trim() }); forget(); toast(t('saved')); } catch (err) { reportError(err); }
        } }, t('groups.rename')),
        h('button', { type: 'button', class: 'danger', onclick: async () => {
          if (!window.confirm(t('groups.delete.confirm', { name: g.name }))) return;
          try { await api.del(`/api/groups/${g.id}`); forget(); toast(t('saved')); go('/admin/groups'); } catch (err) { reportError(err); }
        } }, t('delete')))));
  });
  add(main, h('h1', {}, t('groups.title')),
    h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, t('groups.name')), h('th', { class: 'num' }, t('groups.members')),
      h('th', { class: 'wide' }, t('sessions.created')), h('th', {}, h('span', { class: 'sr-only' }, t('actions'))))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, t('groups.none')))))),
    form);
}
