// Optional server features, read from the OpenAPI document the server generates from
// its routes: the console hides what this server does not have (API tokens,
// de-identified export, server-side audit export) instead of failing.

import { api } from './api.js';

let doc = null;

async function openapi() {
  if (!doc) {
    try { doc = await api.get('/api/openapi.json'); } catch (_) { doc = { paths: {} }; }
  }
  return doc;
}

export async function features() {
  const d = await openapi();
  const paths = d.paths || {};
  const has = (p) => Object.prototype.hasOwnProperty.call(paths, p);
  return {
    tokens: has('/api/users/me/tokens'),
    deidentify: JSON.stringify(paths['/api/patients/{id}/export'] || {}).includes('deidentify'),
    preview: has('/api/patients/images/{instance_id}/preview'),
  };
}
