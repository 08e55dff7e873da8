// What every scenario shares: its length and size from the command line, the thresholds of
// its checks, and the frame fetches with their checks.

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';

import { BASE_URL, num } from './env.js';
import { PRIVACY, checkFrame, locationHash } from './frame.js';
import { byHashUrl, isFrame, latestUrl, params } from './hubs.js';

/** `--duration` of `load-tests/run`, or `fallback`. */
export function duration(fallback) {
  return __ENV.DURATION || fallback;
}

/** `--vus` of `load-tests/run`, or `fallback`. */
export function vus(fallback) {
  return num('VUS', fallback);
}

/**
 * The thresholds every scenario starts from. A single failed check fails the run (a check
 * without a threshold could not), a privacy check above all; so does a run without any privacy
 * check, and one where fewer of the frame answers were privacy-checked than the script intends:
 * `share` of them (1, every one, unless a script samples on purpose). k6 passes a Rate
 * threshold that saw no sample, hence the count.
 */
export function checkThresholds(share = 1) {
  return {
    checks: ['rate==1'],
    'checks{privacy:yes}': ['rate==1'],
    privacy_checked_frames: ['count>0'],
    privacy_checked_answers: [share >= 1 ? 'rate==1' : `rate>=${share}`],
    // Not limits: k6 exports a sub-metric only when it has a threshold, and the runner's
    // report.py compares these, k6's own count of 200s on the frame routes, with the answers
    // privacy_checked_answers saw (a 200 that reached neither fails the run there).
    'http_reqs{route:frame,status:200}': ['count>=0'],
    'http_reqs{route:frame_by_hash,status:200}': ['count>=0'],
  };
}

/** The thresholds of a scenario that privacy-checks every frame answer. */
export const CHECK_THRESHOLDS = checkThresholds(1);

/**
 * Frames hubs received, tagged `frame=owner/camera/seq` when RECORD_FRAMES is set: the runner
 * counts the distinct tags in k6's JSON samples (origin requests per distinct frame).
 */
export const framesReceived = new Counter('frames_received');
const RECORD_FRAMES = __ENV.RECORD_FRAMES === '1';

/** Frames that went through the privacy checks. */
export const checkedFrames = new Counter('privacy_checked_frames');

/**
 * Every 200 answer on the frame routes (latest and by hash): true when it went through the
 * privacy checks, false when it was discarded unread. Stream parts are counted in
 * privacy_checked_frames only.
 */
export const checkedAnswers = new Rate('privacy_checked_answers');

/** Random integer in [lo, hi]. */
export function between(lo, hi) {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/**
 * A hub's state between polls: the frame it shows (ETag, X-Frame-Seq, Content-Location, the
 * hash of the full frame it is or comes from, and whether it is the full frame itself).
 */
export function newHubState() {
  return { held: false, etag: null, seq: null, location: null, hash: null, full: true };
}

/**
 * The privacy checks of a 200 answer on a frame route, whatever it claims to be: it must be an
 * `image/jpeg` frame. A full frame (X-Frame-Variant `full`, or no such header) is checked by its
 * own watermark. A rendition is re-encoded without camsim's comment, so it is checked through
 * its source: its Content-Location names the source full frame by hash; that frame is fetched
 * (`variant=full`) and checked by its watermark, and both must carry the same X-Frame-Seq.
 * Returns true for a full frame.
 */
export function checkAnswer(res, hub, route) {
  checkedAnswers.add(true);
  check(
    res,
    { 'privacy: a 200 answer is an image/jpeg frame': (r) => isFrame(r) },
    Object.assign({ route }, PRIVACY),
  );
  const variant = res.headers['X-Frame-Variant'];
  if (!variant || variant === 'full') {
    checkFrame(res.body, res.headers['X-Frame-Seq'], hub, hub.camera, route);
    checkedFrames.add(1);
    return true;
  }
  checkRendition(res, hub, variant);
  return false;
}

/** A rendition's privacy, through its source frame; and that it is smaller than its source. */
export function checkRendition(res, hub, variant) {
  const location = res.headers['Content-Location'] || '';
  const hash = locationHash(location, hub.camera);
  check(
    res,
    {
      'privacy: a rendition names its source frame and variant in Content-Location': () =>
        hash !== null && location.endsWith(`?variant=${variant}`),
    },
    PRIVACY,
  );
  if (!hash) return null;
  const source = http.get(
    byHashUrl(hub.camera, hash, 'variant=full'),
    params(hub, 'frame_by_hash', { tags: { source: 'yes' } }),
  );
  const ok = isFrame(source) && (source.headers['X-Frame-Variant'] || 'full') === 'full';
  check(source, { 'privacy: the source of a rendition is a full frame': () => ok }, PRIVACY);
  if (source.status === 200) checkedAnswers.add(true);
  if (!ok) return null;
  checkFrame(source.body, source.headers['X-Frame-Seq'], hub, hub.camera, 'frame_by_hash');
  checkedFrames.add(1);
  check(
    res,
    {
      'privacy: a rendition has its source frame X-Frame-Seq': (r) =>
        r.headers['X-Frame-Seq'] === source.headers['X-Frame-Seq'],
    },
    PRIVACY,
  );
  check(
    res,
    { 'a rendition is smaller than its source frame': (r) => r.body.byteLength < source.body.byteLength },
    { kind: 'rendition' },
  );
  return source;
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

/**
 * Checks and records a latest-frame answer (also for answers of http.batch): every 200 is
 * privacy-checked, whatever its Content-Type.
 */
export function afterLatest(res, hub, state) {
  if (res.status === 200) {
    state.held = true;
    state.full = checkAnswer(res, hub, 'frame');
    state.etag = res.headers.Etag || null;
    state.location = res.headers['Content-Location'] || null;
    state.hash = locationHash(state.location, hub.camera);
    state.seq = res.headers['X-Frame-Seq'] || null;
    if (RECORD_FRAMES) framesReceived.add(1, { frame: `${hub.owner}/${hub.camera}/${state.seq}` });
  } else if (res.status === 304) {
    check(res, { '304 keeps the held frame': (r) => (r.headers.Etag || state.etag) === state.etag });
  }
}

/**
 * Whether the hub holds a frame to follow by its content address. A hub that holds none yet
 * (every answer so far a 304, an error or abandoned) has nothing to follow; a hub that holds one
 * without a Content-Location naming it fails a check, as its by-hash and resume requests would
 * silently not be made.
 */
export function canFollow(hub, state) {
  if (!state.held) return false;
  check(
    state,
    { 'a frame held names its content address in Content-Location': (s) => s.hash !== null },
    { kind: 'follow' },
  );
  return state.hash !== null;
}

/**
 * GET the held frame where its Content-Location points (by content address, with the
 * rendition's variant if it is one); checks it. Returns the response, or null when the hub holds
 * nothing to follow (see `canFollow`).
 */
export function fetchByHash(hub, state, extra = {}) {
  if (!canFollow(hub, state)) return null;
  const res = http.get(`${BASE_URL}${state.location}`, params(hub, 'frame_by_hash', extra));
  if (res.status === 200) {
    checkAnswer(res, hub, 'frame_by_hash');
    check(res, { 'by-hash answer is the frame held': (r) => r.headers.Etag === state.etag });
  }
  return res;
}

/**
 * Fetch the full frame the hub holds (or whose rendition it holds) in two ranges, the second
 * a resume with If-Range, and check the reassembled body like any frame. The first range must
 * be answered 206, or with a gateway error (which the scenario's expected statuses judge); a
 * 200 is privacy-checked like any. Returns true when both parts arrived.
 */
export function fetchResumed(hub, state, extra = {}) {
  if (!canFollow(hub, state)) return false;
  // A full frame's ETag is its content address. `variant=full` only where renditions exist.
  const url = byHashUrl(hub.camera, state.hash, state.full ? '' : 'variant=full');
  const etag = `"${state.hash}"`;
  const split = between(100, 4000);
  const first = http.get(
    url,
    params(hub, 'frame_by_hash', Object.assign({}, extra, { headers: { Range: `bytes=0-${split - 1}` } })),
  );
  check(first, {
    'a range request answers 206 or a gateway error': (r) => [206, 502, 503, 504].indexOf(r.status) >= 0,
  });
  if (first.status === 200) checkAnswer(first, hub, 'frame_by_hash');
  if (first.status !== 206) return false;
  const second = http.get(
    url,
    params(
      hub,
      'frame_by_hash',
      Object.assign({}, extra, { headers: { Range: `bytes=${split}-`, 'If-Range': etag } }),
    ),
  );
  check(second, { 'resume with If-Range answers 206': (r) => r.status === 206 });
  if (second.status === 200) checkAnswer(second, hub, 'frame_by_hash');
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
