// Import: drop files or ZIPs (or pick them), each uploaded as its raw body with upload
// progress, then the report: stored, already stored, failed, skipped, every error named.

import { upload } from '../api.js';
import { t } from '../i18n.js';
import { h, clear, formatBytes, fill, add } from '../dom.js';
import { describeError } from '../app.js';

function contentType(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith('.zip') || file.type === 'application/zip' || file.type === 'application/x-zip-compressed') return 'application/zip';
  if (name.endsWith('.dcm') || file.type === 'application/dicom') return 'application/dicom';
  return 'application/octet-stream';
}

function reportBlock(file, r) {
  const c = r.instances;
  const rows = [
    [t('import.received'), c.received], [t('import.stored'), c.stored], [t('import.already'), c.already_stored],
    [t('import.failed'), c.failed], [t('import.skipped'), r.skipped],
  ];
  return h('div', { class: 'card report', 'data-file': file.name },
    h('h3', {}, file.name),
    h('div', { class: 'counts' }, rows.map(([label, n]) => h('div', { class: 'stat' }, h('div', { class: 'n' }, n), label))),
    r.patients.length ? h('p', {}, `${t('import.patients')} `, r.patients.map((p, i) => [i ? ', ' : '',
      h('a', { href: `#/patients/${p.id}` }, p.external_id), p.created ? ` (${t('import.new')})` : ''])) : null,
    r.errors.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, h('th', {}, t('import.entry')), h('th', {}, t('import.error')))),
      h('tbody', {}, r.errors.map((e) => h('tr', {}, h('td', {}, e.file || '—'), h('td', {}, e.error)))))) : null,
  );
}

export async function render(main) {
  const input = h('input', { type: 'file', id: 'import-files', multiple: true, accept: '.zip,.dcm,application/zip,application/dicom,*/*' });
  const zone = h('div', { class: 'dropzone', id: 'dropzone' },
    h('p', {}, t('import.drop')),
    h('label', { for: 'import-files', class: 'button secondary' }, t('import.choose')),
    input,
  );
  input.classList.add('sr-only');
  const progress = h('div', { id: 'import-progress', 'aria-live': 'polite' });
  const results = h('div', { id: 'import-results' });
  let busy = false;

  async function run(files) {
    if (busy || !files.length) return;
    busy = true;
    input.disabled = true;
    clear(results);
    for (const file of files) {
      const bar = h('progress', { max: file.size || 1, value: 0, 'aria-label': t('import.progress', { name: file.name }) });
      const text = h('span', {}, t('import.uploading', { name: file.name, size: formatBytes(file.size) }));
      fill(progress, h('div', { class: 'card' }, text, bar));
      try {
        const r = await upload('/api/patients/import', file, contentType(file), (loaded, total) => {
          bar.max = total; bar.value = loaded;
          if (loaded >= total) text.textContent = t('import.processing', { name: file.name });
        });
        if (r.status === 200 && r.body) {
          add(results, reportBlock(file, r.body));
        } else {
          const err = r.body && r.body.error ? { code: r.body.error.code, message: r.body.error.message, retryAfter: r.retryAfter } : { message: `HTTP ${r.status}` };
          add(results, h('div', { class: 'alert', role: 'alert', 'data-file': file.name }, h('strong', {}, `${file.name}: `), describeError(err),
            err.code && err.message ? h('div', { class: 'hint' }, err.message) : null));
        }
      } catch (e) {
        add(results, h('div', { class: 'alert', role: 'alert' }, `${file.name}: ${describeError(e)}`));
      }
    }
    fill(progress, h('p', { class: 'alert ok', id: 'import-done' }, t('import.done', { n: files.length })));
    busy = false;
    input.disabled = false;
    input.value = '';
  }

  input.addEventListener('change', () => run([...input.files]));
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    run([...e.dataTransfer.files]);
  });

  add(main, h('h1', {}, t('import.title')), h('p', { class: 'muted' }, t('import.help')), zone, progress, results);
}
