// Hubs: an owner's token, the cameras it grants, and the camera the hub shows. Built from
// camsim's deterministic topology, where every owner owns a few cameras and reads its
// neighbour's first camera (so shared cameras are in every run).

import { BASE_URL } from './env.js';
import { topology } from './camsim.js';
import { mint } from './token.js';

/**
 * For `setup()`: every owner with its cameras and one token granting all of them, valid for
 * the run. `limit` caps the owners (0: all).
 */
export function owners(limit = 0, ttlSecs = 4 * 3600) {
  const map = topology();
  let names = Object.keys(map).sort((a, b) => ownerIndex(a) - ownerIndex(b));
  if (limit > 0) names = names.slice(0, limit);
  return names.map((owner) => ({ owner, cams: map[owner], token: mint(owner, map[owner], ttlSecs) }));
}

/** Every (owner, camera) pair the topology allows, as hubs: `{owner, cams, token, camera}`. */
export function pairs(ownerList) {
  const out = [];
  for (const o of ownerList) {
    for (const camera of o.cams) out.push({ owner: o.owner, cams: o.cams, token: o.token, camera });
  }
  return out;
}

/** Hub number `i` (0-based) of a fleet spread evenly over `pairList`. */
export function hub(pairList, i) {
  return pairList[i % pairList.length];
}

/**
 * Request parameters for `hub`: its token (and, for the peers, which verify nothing, the owner
 * in X-Hub-Owner), the route tag and a URL-template name so that tags stay few.
 */
export function params(h, route, extra = {}) {
  const headers = Object.assign(
    { Authorization: `Bearer ${h.token}`, 'X-Hub-Owner': h.owner },
    extra.headers || {},
  );
  const tags = Object.assign({ route, name: ROUTE_NAMES[route] || route }, extra.tags || {});
  const p = Object.assign({ responseType: 'binary' }, extra, { headers, tags });
  return p;
}

const ROUTE_NAMES = {
  frame: '/v1/cameras/{camera}/frame',
  frame_by_hash: '/v1/cameras/{camera}/frames/{hash}',
  stream: '/v1/cameras/{camera}/stream',
};

/** URL of the latest frame of `camera`, with an optional query. */
export function latestUrl(camera, query = '') {
  return `${BASE_URL}/v1/cameras/${camera}/frame${query ? `?${query}` : ''}`;
}

/** URL of frame `hash` of `camera`, with an optional query. */
export function byHashUrl(camera, hash, query = '') {
  return `${BASE_URL}/v1/cameras/${camera}/frames/${hash}${query ? `?${query}` : ''}`;
}

/** URL of the MJPEG stream of `camera`. */
export function streamUrl(camera, query = '') {
  return `${BASE_URL}/v1/cameras/${camera}/stream${query ? `?${query}` : ''}`;
}

/**
 * Is this a response framecache (or a peer) answered with a frame body (a 200 image/jpeg)? Not
 * what decides whether an answer is privacy-checked: every 200 is (lib/scenario.js).
 */
export function isFrame(res) {
  return res.status === 200 && (res.headers['Content-Type'] || '').startsWith('image/jpeg');
}

/** The Cache-Status of a framecache answer, reduced to hit | stale | coalesced | miss | none. */
export function cacheResult(res) {
  const status = res.headers['Cache-Status'] || '';
  if (!status) return 'none';
  if (status.includes('detail=stale') || status.includes('detail=revalidating')) return 'stale';
  if (status.includes('collapsed')) return 'coalesced';
  if (status.includes('fwd=')) return 'miss';
  return 'hit';
}

function ownerIndex(name) {
  const m = /(\d+)$/.exec(name);
  return m ? Number(m[1]) : 0;
}
