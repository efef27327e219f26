// Sign-in: wrong credentials, an inactive account and throttling each get a plain
// sentence; the notice explains why an earlier session ended.

import { errorOf } from '../api.js';
import { t, lang, setLang, LANGS } from '../i18n.js';
import { h, field, add } from '../dom.js';
import { state, signedIn, route } from '../app.js';

function loginMessage(e) {
  switch (e.code) {
    case 'invalid_credentials': return t('login.invalid');
    case 'account_inactive': return t('login.inactive');
    case 'too_many_attempts': {
      const minutes = Math.max(1, Math.ceil((e.retryAfter || 60) / 60));
      return t('login.throttled', { minutes });
    }
    case 'busy': return t('login.busy');
    default: return e.message || t('error.network');
  }
}

export async function render(main) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const message = h('div', { id: 'login-error', role: 'alert', class: 'alert', hidden: true });
  const submit = h('button', { type: 'submit' }, t('login.submit'));
  const form = h('form', { class: 'card', id: 'login-form', novalidate: true, 'aria-describedby': 'login-error' },
    field(t('login.email'), email), field(t('login.password'), password), message, submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    message.hidden = true;
    if (!email.value || !password.value) {
      message.textContent = t('login.missing');
      message.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      const r = await fetch('/api/auth/login', {
        method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email: email.value.trim(), password: password.value }),
      });
      if (!r.ok) throw await errorOf(r);
      const body = await r.json();
      password.value = '';
      await signedIn(body.user, body.csrf_token);
    } catch (e) {
      message.textContent = e.code ? loginMessage(e) : t('error.network');
      message.hidden = false;
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  const notice = state.notice ? h('p', { class: 'alert info', id: 'login-notice', role: 'status' }, state.notice) : null;
  state.notice = null;
  const langs = h('p', { class: 'langs' }, LANGS.map(([code, name]) => code === lang()
    ? h('strong', { lang: code }, name)
    : h('button', { type: 'button', class: 'link', lang: code, onclick: () => { setLang(code); route(); } }, name))
    .flatMap((el, i) => (i ? [' · ', el] : [el])));
  add(main, h('div', { class: 'signin' }, h('h1', {}, t('login.title')), notice, form, langs));
}
