// My profile: names, email, password; my API tokens when the server has them.

import { api } from '../api.js';
import { t } from '../i18n.js';
import { h, clear, field, select, formatDate, toast, fill, add } from '../dom.js';
import { state, reportError, go } from '../app.js';
import { features } from '../features.js';

async function tokensCard() {
  const list = h('tbody', {});
  const shown = h('div', { id: 'token-shown', 'aria-live': 'polite' });
  async function load() {
    const tokens = await api.get('/api/users/me/tokens');
    fill(list, tokens.length ? tokens.map((tk) => h('tr', {},
      h('td', {}, tk.name), h('td', {}, tk.scope), h('td', {}, formatDate(tk.created_at)), h('td', {}, formatDate(tk.expires_at)),
      h('td', {}, formatDate(tk.last_used_at)),
      h('td', {}, h('button', { type: 'button', class: 'danger', onclick: async () => {
        try { await api.del(`/api/users/me/tokens/${tk.id}`); toast(t('tokens.revoked')); load(); } catch (e) { reportError(e); }
      } }, t('sessions.revoke')))))
      : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, t('tokens.none'))));
  }
  const name = h('input', { type: 'text', id: 'token-name', maxlength: 100, required: true });
  const scope = select([['read', t('tokens.read')], ['write', t('tokens.write')]], 'read', { id: 'token-scope' });
  const days = h('input', { type: 'number', id: 'token-days', min: 1, max: 365, value: 90 });
  const pw = h('input', { type: 'password', id: 'token-password', autocomplete: 'current-password', required: true });
  const form = h('form', { id: 'token-form' }, h('h3', {}, t('tokens.new')), field(t('tokens.name'), name), field(t('tokens.scope'), scope),
    field(t('tokens.days'), days), field(t('profile.current'), pw), h('button', { type: 'submit' }, t('tokens.create')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const created = await api.post('/api/users/me/tokens', { name: name.value.trim(), scope: scope.value, expires_in_days: Number(days.value), current_password: pw.value });
      pw.value = '';
      fill(shown, h('div', { class: 'alert ok' }, h('p', {}, t('tokens.once')), h('code', { class: 'token' }, created.token)));
      load();
    } catch (err) { reportError(err); }
  });
  await load();
  return h('div', { class: 'card' }, h('h2', {}, t('tokens.title')), h('p', { class: 'muted' }, t('tokens.help')), shown,
    h('div', { class: 'table-wrap' }, h('table', { id: 'tokens' }, h('thead', {}, h('tr', {}, h('th', {}, t('tokens.name')), h('th', {}, t('tokens.scope')),
      h('th', {}, t('sessions.created')), h('th', {}, t('sessions.expires')), h('th', {}, t('tokens.used')), h('th', {}, ''))), list)), form);
}

export async function render(main) {
  const me = await api.get('/api/auth/me');
  const first = h('input', { type: 'text', value: me.first_name || '', maxlength: 100, autocomplete: 'given-name' });
  const last = h('input', { type: 'text', value: me.last_name || '', maxlength: 100, autocomplete: 'family-name' });
  const email = h('input', { type: 'email', value: me.email, maxlength: 254, autocomplete: 'email' });
  const newPw = h('input', { type: 'password', autocomplete: 'new-password', minlength: 12, maxlength: 72 });
  const current = h('input', { type: 'password', autocomplete: 'current-password' });
  const form = h('form', { class: 'card', id: 'profile-form' },
    h('h2', {}, t('profile.identity')), field(t('patient.first'), first), field(t('patient.last'), last), field(t('profile.email'), email),
    h('h2', {}, t('profile.password')), field(t('profile.new'), newPw, t('profile.new.hint')),
    field(t('profile.current'), current, t('profile.current.hint')),
    h('button', { type: 'submit' }, t('save')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { first_name: first.value.trim(), last_name: last.value.trim() };
    if (email.value.trim() !== me.email) body.email = email.value.trim();
    if (newPw.value) body.new_password = newPw.value;
    if (current.value) body.current_password = current.value;
    try {
      const user = await api.put('/api/users/me/profile', body);
      state.user = { ...state.user, ...user };
      toast(newPw.value ? t('profile.saved.password') : t('saved'));
      go('/profile');
    } catch (err) { reportError(err); }
  });
  const role = h('p', { class: 'muted' }, t('profile.role', { role: t(`role.${me.role}`) }));
  add(main, h('h1', {}, t('profile.title')), role, form);
  if ((await features()).tokens) add(main, await tokensCard());
}
