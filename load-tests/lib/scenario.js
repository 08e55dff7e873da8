// What every scenario shares: its length and size from the command line, thresholds of the
// privacy checks, and the frame fetches with their checks.

import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

import { num } from './env.js';
import { checkFrame, locationHash } from './frame.js';
import { byHashUrl, isFrame, latestUrl, params } from './hubs.js';

/** `--duration` of `load-tests/run`, or `fallback`. */
export function duration(fallback) {
  return __ENV.DURATION || fallback;
}

/** `--vus` of `load-tests/run`, or `fallback`. */
export function vus(fallback) {
  return num('VUS', fallback);
}

/** A single privacy violation fails the run; so does a run without any privacy check. */
export const PRIVACY_THRESHOLDS = {
  'checks{privacy:yes}': ['rate==1'],
  privacy_checked_frames: ['count>0'],
};

/**
 * Frames hubs received, tagged `frame=owner/camera/seq` when RECORD_FRAMES is set: the runner
 * counts the distinct tags in k6's JSON samples (origin requests per distinct frame).
 */
export const framesReceived = new Counter('frames_received');
const RECORD_FRAMES = __ENV.RECORD_FRAMES === '1';

/** Frames that went through the privacy checks. */
export const checkedFrames = new Counter('privacy_checked_frames');

/** Random integer in [lo, hi]. */
export function between(lo, hi) {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/**
 * A hub's state between polls: the ETag and hash of the frame it shows.
 * `fetchLatest` polls with If-None-Match, checks what it gets, and updates the state.
 */
export function newHubState() {
  return { etag: null, hash: null, seq: null };
}

/**
 * GET the latest frame as `hub` would: If-None-Match with the ETag it holds. A 200 is checked
 * (privacy) and becomes the held frame; a 304 keeps it. Returns the response.
 */
export function fetchLatest(hub, state, extra = {}) {
  const headers = Object.assign({}, extra.headers || {});
  if (state.etag) headers['If-None-Match'] = state.etag;
  const res = http.get(
    latestUrl(hub.camera, extra.query || ''),
    params(hub, 'frame', Object.assign({}, extra, { headers })),
  );
  afterLatest(res, hub, state);
  return res;
}

/** Checks and records a latest-frame answer (also for answers of http.batch). */
export function afterLatest(res, hub, state) {
  if (isFrame(res)) {
    checkFrame(res.body, res.headers['X-Frame-Seq'], hub, hub.camera, 'frame');
    checkedFrames.add(1);
    state.etag = res.headers.Etag || null;
    state.hash = locationHash(res.headers['Content-Location'], hub.camera);
    state.seq = res.headers['X-Frame-Seq'] || null;
    if (RECORD_FRAMES) framesReceived.add(1, { frame: `${hub.owner}/${hub.camera}/${state.seq}` });
  } else if (res.status === 304) {
    check(res, { '304 keeps the held frame': (r) => (r.headers.Etag || state.etag) === state.etag });
  }
}

/** GET the held frame by its content address; checks it. Returns the response, or null. */
export function fetchByHash(hub, state, extra = {}) {
  if (!state.hash) return null;
  const res = http.get(byHashUrl(hub.camera, state.hash, extra.query || ''), params(hub, 'frame_by_hash', extra));
  if (isFrame(res)) {
    checkFrame(res.body, res.headers['X-Frame-Seq'], hub, hub.camera, 'frame_by_hash');
    checkedFrames.add(1);
    check(res, {
      'by-hash answer is the frame asked for': (r) => r.headers.Etag === `"${state.hash}"`,
    });
  }
  return res;
}

/**
 * Fetch the held frame in two ranges, the second a resume with If-Range, and check the
 * reassembled body like any frame. Returns true when both parts arrived.
 */
export function fetchResumed(hub, state, extra = {}) {
  if (!state.hash || !state.etag) return false;
  const url = byHashUrl(hub.camera, state.hash);
  const split = between(100, 4000);
  const first = http.get(
    url,
    params(hub, 'frame_by_hash', Object.assign({}, extra, { headers: { Range: `bytes=0-${split - 1}` } })),
  );
  if (first.status !== 206) return false;
  const second = http.get(
    url,
    params(
      hub,
      'frame_by_hash',
      Object.assign({}, extra, { headers: { Range: `bytes=${split}-`, 'If-Range': state.etag } }),
    ),
  );
  check(second, { 'resume with If-Range answers 206': (r) => r.status === 206 });
  if (second.status !== 206) return false;
  const whole = new Uint8Array(first.body.byteLength + second.body.byteLength);
  whole.set(new Uint8Array(first.body), 0);
  whole.set(new Uint8Array(second.body), first.body.byteLength);
  check(first, {
    'Content-Range covers the whole frame': () =>
      (first.headers['Content-Range'] || '').endsWith(`/${whole.byteLength}`),
  });
  checkFrame(whole.buffer, second.headers['X-Frame-Seq'], hub, hub.camera, 'frame_by_hash');
  checkedFrames.add(1);
  return true;
}
