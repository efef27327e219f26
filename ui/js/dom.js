// Tiny DOM helpers: elements are built with h(), never from HTML strings, so data from
// the API is always text.

const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'indeterminate', 'multiple']);

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/// A labelled form field: label, control, optional hint (linked with aria-describedby).
let uid = 0;
export function field(labelText, control, hint) {
  const id = control.id || `f${++uid}`;
  control.id = id;
  const parts = [h('label', { for: id }, labelText), control];
  if (hint) {
    const hid = `${id}-hint`;
    control.setAttribute('aria-describedby', hid);
    parts.push(h('div', { class: 'hint', id: hid }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

export function select(options, value, attrs = {}) {
  return h('select', attrs, options.map(([v, label]) => h('option', { value: v, selected: String(v) === String(value ?? '') }, label)));
}

export function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

export function toast(message, bad = false) {
  const box = document.getElementById('toast');
  const item = h('div', { class: bad ? 'bad' : '' }, message);
  box.append(item);
  setTimeout(() => item.remove(), bad ? 8000 : 4000);
}

export function formatDate(iso, withTime = true) {
  if (!iso) return '—';
  // A calendar date (birth, study) is not an instant: show it as is, in no time zone.
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(iso);
  const d = new Date(dateOnly ? `${iso}T00:00:00Z` : iso);
  if (Number.isNaN(d.getTime())) return iso;
  // Day before month in both languages (en-GB), never the ambiguous US order.
  const locale = document.documentElement.lang === 'fr' ? 'fr-FR' : 'en-GB';
  if (dateOnly) return d.toLocaleDateString(locale, { timeZone: 'UTC' });
  return withTime ? d.toLocaleString(locale) : d.toLocaleDateString(locale);
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(1)} ${units[i]}`;
}

/// Saves a Blob as a file through a temporary object URL.
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/// Replaces an element's children (arrays are flattened, null and false left out).
export function fill(el, ...children) {
  clear(el);
  return append(el, children);
}

/// Appends children (arrays are flattened, null and false left out).
export function add(el, ...children) {
  return append(el, children);
}
