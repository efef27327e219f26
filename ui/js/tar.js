// A folder as one plain tar (POSIX ustar, with a pax `path` record for names over 100
// bytes), built as a Blob of headers and the File objects themselves: nothing is read
// into memory here, the browser streams the parts when the Blob is uploaded. The server
// takes it like any tar: checked whole, entry names never used as paths.

const BLOCK = 512;
// The ustar size field holds 11 octal digits.
const MAX_SIZE = 8 ** 11 - 1;
const encoder = new TextEncoder();

function octal(header, offset, width, value) {
  const digits = value.toString(8).padStart(width - 1, '0');
  for (let i = 0; i < width - 1; i++) header[offset + i] = digits.charCodeAt(i);
  header[offset + width - 1] = 0;
}

function header(nameBytes, size, mtime, type) {
  const b = new Uint8Array(BLOCK);
  b.set(nameBytes.subarray(0, 100), 0);
  octal(b, 100, 8, 0o644);
  octal(b, 108, 8, 0);
  octal(b, 116, 8, 0);
  octal(b, 124, 12, size);
  octal(b, 136, 12, mtime);
  b[156] = type.charCodeAt(0);
  b.set(encoder.encode('ustar\u000000'), 257);
  // The checksum is computed with its own field read as eight spaces.
  b.fill(0x20, 148, 156);
  const sum = b.reduce((a, x) => a + x, 0);
  octal(b, 148, 7, sum);
  b[155] = 0x20;
  return b;
}

function padding(size) {
  const rest = size % BLOCK;
  return rest ? new Uint8Array(BLOCK - rest) : null;
}

// One pax record, "LEN key=value\n", where LEN counts its own digits.
function paxRecord(key, value) {
  const body = encoder.encode(` ${key}=${value}\n`).length;
  let len = body + 1;
  while (String(len).length + body !== len) len = String(len).length + body;
  return encoder.encode(`${len} ${key}=${value}\n`);
}

/// `items` are `{path, file}` with `/`-separated relative paths; returns a Blob.
export function tarOf(items) {
  const parts = [];
  for (const { path, file } of items) {
    if (file.size > MAX_SIZE) throw new Error(`${path}: too large for one upload`);
    const name = encoder.encode(path);
    const mtime = Math.floor((file.lastModified || 0) / 1000);
    if (name.length > 100) {
      const record = paxRecord('path', path);
      parts.push(header(encoder.encode('PaxHeader'), record.length, mtime, 'x'), record);
      const pad = padding(record.length);
      if (pad) parts.push(pad);
    }
    parts.push(header(name, file.size, mtime, '0'), file);
    const pad = padding(file.size);
    if (pad) parts.push(pad);
  }
  parts.push(new Uint8Array(2 * BLOCK));
  return new Blob(parts, { type: 'application/x-tar' });
}
