// Group names for admins (users only ever see their own group).

import { api } from '../api.js';
import { isAdmin } from '../app.js';

let cache = null;

export async function groups(force = false) {
  if (!isAdmin()) return [];
  if (!cache || force) cache = (await api.get('/api/groups?page_size=200')).items;
  return cache;
}

export function forget() { cache = null; }

export function groupName(list, id) {
  if (id === null || id === undefined) return null;
  const g = list.find((x) => x.id === id);
  return g ? g.name : `#${id}`;
}
