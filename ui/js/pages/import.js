// Import: drop files, ZIPs or folders (or pick files or a folder), each file uploaded as
// its raw body and each folder as one tar of its files (nested folders included, names
// relative to the folder), with upload progress, then the report: stored, already
// stored, failed, skipped, every error named. A folder is one request whichever host
// serves the console (the plugin cannot take multipart bodies) and one report, with the
// server's checks and limits of any tar: DICOMDIR and other non-DICOM files are skipped
// and named by their path in the folder.

import { upload } from '../api.js';
import { tarOf } from '../tar.js';
import { t } from '../i18n.js';
import { h, clear, formatBytes, fill, add } from '../dom.js';
import { describeError } from '../app.js';

function contentType(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith('.zip') || file.type === 'application/zip' || file.type === 'application/x-zip-compressed') return 'application/zip';
  if (name.endsWith('.dcm') || file.type === 'application/dicom') return 'application/dicom';
  return 'application/octet-stream';
}

// An upload: a file as it is, or a folder as a tar of its files.
function fileUpload(file) {
  return { name: file.name, size: file.size, body: file, type: contentType(file) };
}

function folderUpload(name, items) {
  const body = tarOf(items);
  return { name: `${name}/`, size: body.size, body, type: 'application/x-tar', files: items.length };
}

// The files an <input webkitdirectory> gave, grouped by their top folder.
function pickedFolders(files) {
  const folders = new Map();
  for (const file of files) {
    const path = file.webkitRelativePath || file.name;
    const top = path.split('/')[0];
    if (!folders.has(top)) folders.set(top, []);
    folders.get(top).push({ path, file });
  }
  return [...folders].map(([name, items]) => folderUpload(name, items));
}

function readBatch(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

// Every file under a dropped directory entry, depth first; readEntries answers in
// batches until an empty one.
async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ path: prefix + entry.name, file });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (let batch = await readBatch(reader); batch.length; batch = await readBatch(reader)) {
      for (const child of batch) await walk(child, `${prefix}${entry.name}/`, out);
    }
  }
}

// What was dropped: the entries must be taken during the event (the DataTransfer is
// emptied after it); browsers without entries give the files alone.
function droppedEntries(dataTransfer) {
  const items = [...(dataTransfer.items || [])].filter((i) => i.kind === 'file');
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (!entries.length || entries.some((e) => !e)) return { files: [...dataTransfer.files], directories: [] };
  const files = [];
  entries.forEach((e, i) => { if (e.isFile) files.push(items[i].getAsFile()); });
  return { files, directories: entries.filter((e) => e.isDirectory) };
}

async function droppedUploads({ files, directories }) {
  const uploads = files.map(fileUpload);
  for (const dir of directories) {
    const items = [];
    await walk(dir, '', items);
    if (items.length) uploads.push(folderUpload(dir.name, items));
  }
  return uploads;
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
  const input = h('input', { type: 'file', id: 'import-files', multiple: true, accept: '.zip,.dcm,.tar,.tgz,.gz,.zst,application/zip,application/dicom,*/*' });
  const folder = h('input', { type: 'file', id: 'import-folder', webkitdirectory: true, multiple: true });
  const zone = h('div', { class: 'dropzone', id: 'dropzone' },
    h('p', {}, t('import.drop')),
    h('label', { for: 'import-files', class: 'button secondary' }, t('import.choose')), ' ',
    h('label', { for: 'import-folder', class: 'button secondary' }, t('import.chooseFolder')),
    input, folder,
  );
  input.classList.add('sr-only');
  folder.classList.add('sr-only');
  const progress = h('div', { id: 'import-progress', 'aria-live': 'polite' });
  const results = h('div', { id: 'import-results' });
  let busy = false;

  async function run(files) {
    if (busy || !files.length) return;
    busy = true;
    input.disabled = true;
    folder.disabled = true;
    clear(results);
    for (const file of files) {
      const bar = h('progress', { max: file.size || 1, value: 0, 'aria-label': t('import.progress', { name: file.name }) });
      const text = h('span', {}, t('import.uploading', { name: file.name, size: formatBytes(file.size) }));
      fill(progress, h('div', { class: 'card' }, text, bar));
      try {
        const r = await upload('/api/patients/import', file.body, file.type, (loaded, total) => {
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
    folder.disabled = false;
    input.value = '';
    folder.value = '';
  }

  input.addEventListener('change', () => run([...input.files].map(fileUpload)));
  folder.addEventListener('change', () => run(pickedFolders([...folder.files])));
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const dropped = droppedEntries(e.dataTransfer);
    droppedUploads(dropped).then(run, (err) => add(results, h('div', { class: 'alert', role: 'alert' }, describeError(err))));
  });

  add(main, h('h1', {}, t('import.title')), h('p', { class: 'muted' }, t('import.help')), zone, progress, results);
}
