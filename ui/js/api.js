// The API client of the console. Authentication is the httpOnly access and refresh
// cookies only: the page never sees a token. The CSRF token (readable by this origin
// only) is sent in X-CSRF-Token on every write. An expired access token is refreshed
// silently, once, and the request retried; when that fails the session has ended and
// the page goes back to sign-in.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let csrfFromMe = null;
let sessionEnded = () => {};

/// Called when the session is over (expired, revoked, signed out elsewhere).
export function onSessionEnd(fn) { sessionEnded = fn; }
export function setCsrf(token) { if (token) csrfFromMe = token; }

function csrfCookie() {
  const m = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : null;
}

/// The session's CSRF token: the cookie when readable (it follows refreshes made by
/// other tabs), else what /api/auth/me said.
export function csrfToken() { return csrfCookie() || csrfFromMe; }

const WRITES = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);

function send(method, path, opts) {
  const headers = { ...(opts.headers || {}) };
  let body = opts.body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  if (WRITES.has(method)) {
    const token = csrfToken();
    if (token) headers['X-CSRF-Token'] = token;
  }
  return fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
}

export async function errorOf(resp) {
  let code = `http_${resp.status}`, message = resp.statusText;
  try {
    const b = await resp.json();
    if (b && b.error) { code = b.error.code; message = b.error.message; }
  } catch (_) { /* not JSON */ }
  const retry = parseInt(resp.headers.get('Retry-After') || '', 10);
  return new ApiError(resp.status, code, message, Number.isFinite(retry) ? retry : undefined);
}

let refreshing = null;

/// Spends the refresh cookie for a new access token. Tabs take turns (Web Locks):
/// a refresh token presented twice revokes the whole session, so a tab that waited
/// first checks whether another tab refreshed already (the CSRF cookie changed).
export function refresh() {
  if (!refreshing) {
    const before = csrfCookie();
    const run = async () => {
      const now = csrfCookie();
      if (before && now && now !== before) return true;
      try {
        const r = await send('POST', '/api/auth/refresh', {});
        if (!r.ok) return false;
        const b = await r.json();
        setCsrf(b.csrf_token);
        return true;
      } catch (_) {
        return false;
      }
    };
    const locked = navigator.locks ? navigator.locks.request('cohort-refresh', run) : run();
    refreshing = locked.finally(() => { refreshing = null; });
  }
  return refreshing;
}

/// One request; 401 triggers one refresh and one retry, then the end of the session.
export async function request(method, path, opts = {}) {
  let r = await send(method, path, opts);
  const stale = r.status === 401 || (r.status === 403 && WRITES.has(method) && (await peekCode(r)) === 'csrf_failed');
  if (stale && !opts.noRefresh) {
    if (await refresh()) r = await send(method, path, opts);
    if (r.status === 401) {
      sessionEnded('expired');
      throw await errorOf(r);
    }
  }
  if (!r.ok) throw await errorOf(r);
  return r;
}

async function peekCode(resp) {
  try { return (await resp.clone().json()).error.code; } catch (_) { return null; }
}

async function json(r) { return r.status === 204 ? null : r.json(); }

export const api = {
  get: (path) => request('GET', path).then(json),
  post: (path, body) => request('POST', path, { json: body }).then(json),
  put: (path, body) => request('PUT', path, { json: body }).then(json),
  del: (path, headers) => request('DELETE', path, { headers }).then(json),
  /// GET that answers null for 404 (optional features of the server).
  optional: async (path) => {
    try { return await api.get(path); } catch (e) { if (e.status === 404) return null; throw e; }
  },
};

/// Query string from an object, leaving out empty values.
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}

/// Uploads one file with XMLHttpRequest (fetch has no upload progress). Resolves with
/// {status, body, retryAfter}; refreshes once on 401.
export function upload(path, file, contentType, onProgress, retried = false) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Content-Type', contentType);
    const token = csrfToken();
    if (token) xhr.setRequestHeader('X-CSRF-Token', token);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onerror = () => reject(new ApiError(0, 'network_error', 'the upload was interrupted'));
    xhr.onload = async () => {
      if (xhr.status === 401 && !retried) {
        if (await refresh()) { upload(path, file, contentType, onProgress, true).then(resolve, reject); return; }
        sessionEnded('expired');
      }
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      resolve({ status: xhr.status, body, retryAfter: parseInt(xhr.getResponseHeader('Retry-After') || '', 10) });
    };
    xhr.send(file);
  });
}

/// Downloads an answer (POST or GET) as a file, with its Content-Disposition name.
export async function download(method, path, body, fallbackName) {
  const r = await request(method, path, body === undefined ? {} : { json: body });
  const disposition = r.headers.get('Content-Disposition') || '';
  const m = disposition.match(/filename="?([^";]+)"?/);
  const blob = await r.blob();
  return { blob, filename: m ? m[1] : fallbackName };
}
