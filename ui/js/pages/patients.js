// Patients: search as you type, status filter, sort, pagination, selection export.

import { api, qs, download } from '../api.js';
import { t } from '../i18n.js';
import { h, clear, debounce, select, formatDate, saveBlob, toast, fill, add } from '../dom.js';
import { isAdmin, setQuery, statuses, reportError, describeError } from '../app.js';
import { groups, groupName } from './groups-cache.js';

const PAGE_SIZE = 25;

export function statusBadge(p) {
  return h('span', { class: `badge ${p.status}` }, p.status_label);
}

export function patientName(p) {
  const name = [p.last_name ? p.last_name.toUpperCase() : null, p.first_name].filter(Boolean).join(' ');
  return name || t('patients.noname');
}

async function renderStats(box) {
  try {
    const s = await api.get('/api/stats');
    const all = await statuses();
    fill(box, 
      h('div', { class: 'stat' }, h('div', { class: 'n' }, s.patients.total), t('stats.patients')),
      all.map((st) => h('div', { class: 'stat' }, h('div', { class: 'n' }, s.patients.by_status[st.code] ?? 0), st.label)),
    );
  } catch (_) { box.remove(); }
}

export async function render(main, _params, query) {
  const admin = isAdmin();
  const all = await statuses();
  const groupList = admin ? await groups() : [];
  const state = {
    q: query.get('q') || '',
    status: query.get('status') || '',
    sort: query.get('sort') || '-updated_at',
    page: Math.max(1, parseInt(query.get('page') || '1', 10) || 1),
  };
  const selected = new Set();

  const search = h('input', { type: 'search', id: 'patient-search', value: state.q, maxlength: 100, autocomplete: 'off',
    placeholder: t('patients.search.placeholder') });
  const status = select([['', t('patients.status.all')], ...all.map((s) => [s.code, s.label])], state.status, { id: 'patient-status' });
  const sort = select([
    ['-updated_at', t('sort.updated')], ['-created_at', t('sort.created')], ['last_name', t('sort.name')],
    ['external_id', t('sort.ipp')], ['status', t('sort.status')],
  ], state.sort, { id: 'patient-sort' });
  const count = h('p', { class: 'muted', id: 'patient-count', 'aria-live': 'polite' });
  const tbody = h('tbody', { id: 'patient-rows' });
  const pager = h('div', { class: 'pager' });
  const exportButton = h('button', { type: 'button', id: 'export-selected', disabled: true, onclick: exportSelected }, t('patients.export.selected', { n: 0 }));
  const statsBox = h('div', { class: 'stats', 'aria-label': t('stats.title') });

  function updateExportButton() {
    exportButton.disabled = selected.size === 0;
    exportButton.textContent = t('patients.export.selected', { n: selected.size });
  }

  async function exportSelected() {
    exportButton.disabled = true;
    const ids = [...selected];
    try {
      toast(t('export.preparing'));
      const { blob, filename } = await download('POST', '/api/patients/export', { ids }, 'patients.zip');
      saveBlob(blob, filename);
      toast(t('export.done', { name: filename }));
    } catch (e) { reportError(e); }
    updateExportButton();
  }

  let seq = 0;
  async function load() {
    const mine = ++seq;
    setQuery({ q: state.q, status: state.status, sort: state.sort === '-updated_at' ? '' : state.sort, page: state.page > 1 ? state.page : '' });
    tbody.setAttribute('aria-busy', 'true');
    let data;
    try {
      data = await api.get(`/api/patients${qs({ q: state.q.trim(), status: state.status, sort: state.sort, page: state.page, page_size: PAGE_SIZE })}`);
    } catch (e) {
      if (mine !== seq) return;
      fill(tbody, h('tr', {}, h('td', { colspan: 8, class: 'error' }, describeError(e))));
      tbody.removeAttribute('aria-busy');
      return;
    }
    if (mine !== seq) return;
    tbody.removeAttribute('aria-busy');
    const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
    if (state.page > pages && data.total > 0) { state.page = pages; load(); return; }
    count.textContent = t('patients.count', { n: data.total });
    clear(tbody);
    if (data.items.length === 0) {
      add(tbody, h('tr', {}, h('td', { colspan: 8, class: 'muted' }, state.q || state.status ? t('patients.none.filtered') : t('patients.none'))));
    }
    for (const p of data.items) {
      const box = h('input', { type: 'checkbox', checked: selected.has(p.id), 'aria-label': t('patients.select', { ipp: p.external_id }),
        onchange: (e) => { if (e.target.checked) selected.add(p.id); else selected.delete(p.id); updateExportButton(); } });
      add(tbody, h('tr', { 'data-patient': p.id },
        h('td', {}, box),
        h('td', { class: 'nowrap' }, h('a', { href: `#/patients/${p.id}` }, p.external_id)),
        h('td', {}, patientName(p)),
        h('td', { class: 'wide' }, p.date_of_birth ? formatDate(p.date_of_birth, false) : '—'),
        h('td', {}, statusBadge(p)),
        admin ? h('td', { class: 'wide' }, groupName(groupList, p.group_id) || h('em', {}, t('patients.ungrouped'))) : null,
        h('td', { class: 'wide' }, formatDate(p.updated_at)),
      ));
    }
    fill(pager, 
      h('button', { type: 'button', class: 'secondary', disabled: state.page <= 1, onclick: () => { state.page--; load(); } }, t('pager.prev')),
      h('span', {}, t('pager.page', { page: state.page, pages })),
      h('button', { type: 'button', class: 'secondary', id: 'next-page', disabled: state.page >= pages, onclick: () => { state.page++; load(); } }, t('pager.next')),
    );
  }

  const reload = () => { state.page = 1; load(); };
  const typed = debounce(() => { if (search.value !== state.q) { state.q = search.value; reload(); } }, 250);
  for (const ev of ['input', 'change', 'search']) search.addEventListener(ev, typed);
  status.addEventListener('change', () => { state.status = status.value; reload(); });
  sort.addEventListener('change', () => { state.sort = sort.value; reload(); });

  add(main, 
    h('h1', {}, t('patients.title')),
    statsBox,
    h('div', { class: 'toolbar', role: 'search' },
      h('div', { class: 'grow' }, h('label', { for: 'patient-search' }, t('patients.search')), search),
      h('div', {}, h('label', { for: 'patient-status' }, t('patients.status')), status),
      h('div', {}, h('label', { for: 'patient-sort' }, t('patients.sort')), sort),
    ),
    h('div', { class: 'actions' }, count, exportButton, h('a', { class: 'button secondary', href: '#/import' }, t('nav.import'))),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('caption', { class: 'sr-only' }, t('patients.title')),
      h('thead', {}, h('tr', {},
        h('th', {}, h('span', { class: 'sr-only' }, t('patients.selection'))),
        h('th', {}, t('patients.ipp')), h('th', {}, t('patients.name')), h('th', { class: 'wide' }, t('patients.dob')),
        h('th', {}, t('patients.status')), admin ? h('th', { class: 'wide' }, t('patients.group')) : null,
        h('th', { class: 'wide' }, t('patients.updated')))),
      tbody)),
    pager,
  );
  renderStats(statsBox);
  await load();
}
