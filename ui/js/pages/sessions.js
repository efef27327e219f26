// My sessions: one per device; revoke any (revoking this one signs out).

import { api } from '../api.js';
import { t } from '../i18n.js';
import { h, formatDate, toast, add } from '../dom.js';
import { reportError, go, signOut } from '../app.js';

export async function render(main) {
  const sessions = await api.get('/api/auth/sessions');
  const rows = sessions.map((s) => {
    const revoke = h('button', { type: 'button', class: s.current ? 'secondary' : 'danger', 'data-session': s.id }, s.current ? t('nav.signout') : t('sessions.revoke'));
    revoke.addEventListener('click', async () => {
      if (s.current) { signOut(); return; }
      try {
        await api.del(`/api/auth/sessions/${encodeURIComponent(s.id)}`);
        toast(t('sessions.revoked'));
        go('/sessions');
      } catch (e) { reportError(e); }
    });
    return h('tr', { class: s.current ? 'current' : '' },
      h('td', {}, s.device, ' ', s.current ? h('span', { class: 'badge current' }, t('sessions.current')) : null),
      h('td', {}, s.ip || '—'), h('td', { class: 'wide' }, formatDate(s.created_at)), h('td', {}, formatDate(s.last_seen_at)),
      h('td', { class: 'wide' }, formatDate(s.expires_at)), h('td', {}, revoke));
  });
  add(main, h('h1', {}, t('sessions.title')), h('p', { class: 'muted' }, t('sessions.help')),
    h('div', { class: 'table-wrap' }, h('table', { id: 'sessions' },
      h('thead', {}, h('tr', {}, h('th', {}, t('sessions.device')), h('th', {}, t('sessions.ip')), h('th', { class: 'wide' }, t('sessions.created')),
        h('th', {}, t('sessions.seen')), h('th', { class: 'wide' }, t('sessions.expires')), h('th', {}, h('span', { class: 'sr-only' }, t('actions'))))),
      h('tbody', {}, rows))));
}
