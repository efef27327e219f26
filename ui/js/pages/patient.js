// One patient: facts, status change, names, studies, series with previews; export;
// for admins group assignment and deletion.

import { api, download } from '../api.js';
import { t } from '../i18n.js';
import { h, clear, field, select, formatDate, saveBlob, toast, fill, add } from '../dom.js';
import { isAdmin, statuses, reportError, go } from '../app.js';
import { groups, groupName } from './groups-cache.js';
import { statusBadge, patientName } from './patients.js';
import { features } from '../features.js';

const FIRST_THUMBS = 12;
const MAX_THUMBS = 200;

function previewDialog() {
  let dialog = document.getElementById('preview-dialog');
  if (!dialog) {
    dialog = h('dialog', { id: 'preview-dialog', 'aria-labelledby': 'preview-title' });
    add(document.body, dialog);
  }
  return dialog;
}

function openPreview(inst, label) {
  const dialog = previewDialog();
  fill(dialog, 
    h('h2', { id: 'preview-title' }, label),
    h('img', { src: `/api/patients/images/${encodeURIComponent(inst.id)}/preview`, alt: label, id: 'preview-large' }),
    h('div', { class: 'actions' },
      h('a', { class: 'button secondary', href: `/api/patients/images/${encodeURIComponent(inst.id)}`, download: `${inst.sop_instance_uid}.dcm` }, t('patient.dicom.download')),
      h('button', { type: 'button', onclick: () => dialog.close() }, t('close'))),
  );
  dialog.showModal();
}

function thumb(inst, n) {
  const label = t('patient.instance', { n: inst.instance_number ?? n });
  const img = h('img', { src: `/api/patients/images/${encodeURIComponent(inst.id)}/preview`, alt: label, loading: 'lazy', width: 128, height: 128 });
  const button = h('button', { type: 'button', class: 'thumb', 'data-instance': inst.id, onclick: () => openPreview(inst, label) },
    img, h('span', { class: 'cap' }, label));
  img.addEventListener('error', () => {
    button.classList.add('failed');
    button.querySelector('.cap').textContent = `${label} — ${t('patient.nopreview')}`;
  });
  return button;
}

function seriesBlock(series) {
  const { instances } = series;
  instances.sort((a, b) => (a.instance_number ?? 0) - (b.instance_number ?? 0));
  const thumbs = h('div', { class: 'thumbs' });
  const showAll = h('button', { type: 'button', class: 'secondary', hidden: instances.length <= FIRST_THUMBS }, t('patient.showall', { n: Math.min(instances.length, MAX_THUMBS) }));
  const show = (limit) => { fill(thumbs, instances.slice(0, limit).map((inst, i) => thumb(inst, i + 1))); };
  showAll.addEventListener('click', () => { show(MAX_THUMBS); showAll.hidden = true; });
  show(FIRST_THUMBS);
  return h('div', { class: 'series' },
    h('h4', {}, t('patient.series', { modality: series.modality || '?', n: instances.length }), ' ', h('small', { class: 'muted' }, series.uid)),
    thumbs, showAll);
}

export async function render(main, [id]) {
  const admin = isAdmin();
  const [p, all, feats] = await Promise.all([api.get(`/api/patients/${id}`), statuses(), features()]);
  const groupList = admin ? await groups() : [];

  const title = h('h1', {}, `${patientName(p)} `, h('small', { class: 'muted' }, `(${p.external_id})`));
  const badge = h('span', {}, statusBadge(p));
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, t('patients.ipp')), h('dd', {}, p.external_id),
    h('dt', {}, t('patients.dob')), h('dd', {}, p.date_of_birth ? formatDate(p.date_of_birth, false) : '—'),
    h('dt', {}, t('patients.status')), h('dd', { id: 'patient-status-now' }, badge),
    admin ? [h('dt', {}, t('patients.group')), h('dd', {}, groupName(groupList, p.group_id) || t('patients.ungrouped'))] : null,
    h('dt', {}, t('patients.created')), h('dd', {}, formatDate(p.created_at)),
    h('dt', {}, t('patients.updated')), h('dd', {}, formatDate(p.updated_at)),
  );

  // Status
  const statusSel = select(all.map((s) => [s.code, s.label]), p.status, { id: 'status-select' });
  const statusForm = h('form', { class: 'card', id: 'status-form' }, h('h2', {}, t('patient.status.change')),
    field(t('patients.status'), statusSel), h('button', { type: 'submit' }, t('save')));
  statusForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const updated = await api.put(`/api/patients/${id}`, { status: statusSel.value });
      fill(badge, statusBadge(updated));
      toast(t('patient.status.saved', { label: updated.status_label }));
    } catch (err) { reportError(err); }
  });

  // Names and birth date
  const first = h('input', { type: 'text', value: p.first_name || '', maxlength: 100, autocomplete: 'off' });
  const last = h('input', { type: 'text', value: p.last_name || '', maxlength: 100, autocomplete: 'off' });
  const dob = h('input', { type: 'date', value: p.date_of_birth || '' });
  const identity = h('form', { class: 'card' }, h('h2', {}, t('patient.identity')),
    field(t('patient.last'), last), field(t('patient.first'), first), field(t('patients.dob'), dob),
    h('button', { type: 'submit' }, t('save')));
  identity.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.put(`/api/patients/${id}`, { first_name: first.value.trim() || null, last_name: last.value.trim() || null, date_of_birth: dob.value || null });
      toast(t('saved'));
      go(`/patients/${id}`);
    } catch (err) { reportError(err); }
  });

  // Export
  const deid = feats.deidentify ? h('input', { type: 'checkbox', id: 'export-deid' }) : null;
  const exportButton = h('button', { type: 'button', id: 'export-one' }, t('patient.export'));
  exportButton.addEventListener('click', async () => {
    exportButton.disabled = true;
    try {
      toast(t('export.preparing'));
      const suffix = deid && deid.checked ? '?deidentify=true' : '';
      const { blob, filename } = await download('GET', `/api/patients/${id}/export${suffix}`, undefined, `${p.external_id}.zip`);
      saveBlob(blob, filename);
      toast(t('export.done', { name: filename }));
    } catch (err) { reportError(err); }
    exportButton.disabled = false;
  });
  const exportCard = h('div', { class: 'card' }, h('h2', {}, t('patient.export.title')),
    deid ? h('label', { class: 'inline', for: 'export-deid' }, deid, t('export.deidentify')) : null,
    h('div', { class: 'actions' }, exportButton));

  // Admin: group, deletion
  let adminCard = null;
  if (admin) {
    const groupSel = select([['', t('patients.ungrouped')], ...groupList.map((g) => [g.id, g.name])], p.group_id ?? '', { id: 'group-select' });
    const groupForm = h('form', {}, field(t('patients.group'), groupSel), h('button', { type: 'submit' }, t('patient.group.assign')));
    groupForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await api.put(`/api/patients/${id}`, { group_id: groupSel.value === '' ? null : Number(groupSel.value) });
        toast(t('saved'));
        go(`/patients/${id}`);
      } catch (err) { reportError(err); }
    });
    const purge = h('input', { type: 'checkbox', id: 'purge-dicom' });
    const del = h('button', { type: 'button', class: 'danger', id: 'delete-patient' }, t('patient.delete'));
    del.addEventListener('click', async () => {
      if (!window.confirm(t('patient.delete.confirm', { ipp: p.external_id }))) return;
      try {
        await api.del(`/api/patients/${id}`, purge.checked ? { 'X-Purge-Dicom': 'true' } : {});
        toast(t('patient.deleted', { ipp: p.external_id }));
        go('/patients');
      } catch (err) { reportError(err); }
    });
    adminCard = h('div', { class: 'card' }, h('h2', {}, t('patient.admin')), groupForm,
      h('h3', {}, t('patient.delete')), h('label', { class: 'inline', for: 'purge-dicom' }, purge, t('patient.purge')),
      h('div', { class: 'actions' }, del));
  }

  // Studies and images
  const studies = h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, h('th', {}, t('study.date')), h('th', {}, t('study.description')), h('th', {}, t('study.modalities')),
      h('th', { class: 'num' }, t('study.instances')))),
    h('tbody', {}, p.studies.length ? p.studies.map((s) => h('tr', {},
      h('td', {}, s.study_date ? formatDate(s.study_date, false) : '—'), h('td', {}, s.description || '—'),
      h('td', {}, s.modalities.join(', ') || '—'), h('td', { class: 'num' }, s.instances_count)))
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, t('patient.nostudies'))))));
  const images = h('div', { id: 'images' }, h('p', { class: 'loading' }, t('loading')));

  add(main, 
    h('p', {}, h('a', { href: '#/patients' }, `← ${t('patients.title')}`)),
    title,
    h('div', { class: 'grid2' }, h('div', { class: 'card' }, facts), statusForm),
    h('div', { class: 'grid2' }, exportCard, identity),
    adminCard,
    h('h2', {}, t('patient.studies')), studies,
    h('h2', {}, t('patient.images')), images,
  );

  try {
    const instances = await api.get(`/api/patients/${id}/instances`);
    clear(images);
    if (!instances.length) add(images, h('p', { class: 'muted' }, t('patient.noimages')));
    const byStudy = new Map();
    for (const inst of instances) {
      if (!byStudy.has(inst.study_instance_uid)) byStudy.set(inst.study_instance_uid, new Map());
      const series = byStudy.get(inst.study_instance_uid);
      if (!series.has(inst.series_instance_uid)) series.set(inst.series_instance_uid, { uid: inst.series_instance_uid, modality: inst.modality, instances: [] });
      series.get(inst.series_instance_uid).instances.push(inst);
    }
    for (const [studyUid, series] of byStudy) {
      const study = p.studies.find((s) => s.study_instance_uid === studyUid);
      add(images, h('h3', {}, study && study.description ? study.description : t('patient.study'), ' ', h('small', { class: 'muted' }, studyUid)),
        [...series.values()].map(seriesBlock));
    }
  } catch (err) {
    fill(images, h('p', { class: 'error' }, err.message));
  }
}
