// low_bandwidth: hubs on poor networks. Some send `Save-Data: on`, some the ECT / Downlink
// client hints, some ask for a rendition explicitly (`variant=full|medium|thumb`), some fetch
// frames in two ranges and resume with If-Range.
//
// Renditions are re-encoded and carry no camsim watermark, so their privacy is checked through
// their source: the rendition's Content-Location names the source full frame by hash
// (`/v1/cameras/{camera}/frames/{hash}?variant=NAME`); the hub fetches that frame
// (`variant=full`), checks its watermark like any frame, and checks that both carry the same
// X-Frame-Seq. Full frames are checked directly.
//
// Needs the renditions of issue 4 (variant=medium|thumb, X-Frame-Variant, Accept-CH): against a
// proxy without them the rendition checks fail, as they should.

import http from 'k6/http';
import { check, sleep } from 'k6';

import { BASE_URL } from '../lib/env.js';
import { locationHash } from '../lib/frame.js';
import { hub, latestUrl, owners, pairs, params } from '../lib/hubs.js';
import {
  CHECK_THRESHOLDS,
  between,
  checkAnswer,
  duration,
  fetchResumed,
  newHubState,
  vus,
} from '../lib/scenario.js';

export const VARIANTS = ['full', 'medium', 'thumb'];
const OK = http.expectedStatuses(200, 206, 304);

// How hubs ask: hints, or an explicit variant.
const PROFILES = [
  { name: 'save_data', headers: { 'Save-Data': 'on' }, expect: 'thumb' },
  { name: 'ect_2g', headers: { ECT: '2g', Downlink: '0.25' } },
  { name: 'ect_3g', headers: { ECT: '3g', Downlink: '1.5' } },
  { name: 'ect_4g', headers: { ECT: '4g', Downlink: '20' } },
  { name: 'variant_thumb', query: 'variant=thumb', expect: 'thumb' },
  { name: 'variant_medium', query: 'variant=medium', expect: 'medium' },
  { name: 'variant_full', query: 'variant=full', expect: 'full' },
];

export const options = {
  scenarios: {
    low_bandwidth: { executor: 'constant-vus', vus: vus(60), duration: duration('30s'), gracefulStop: '10s' },
  },
  thresholds: Object.assign({}, CHECK_THRESHOLDS, {
    http_req_failed: ['rate<0.001'],
    'checks{kind:rendition}': ['rate==1'],
    // A latest frame that misses waits for the origin's fresh 720p frame and then for its
    // rendering, on the same two cores as camsim and k6: looser than fleet's all-full hits.
    'http_req_duration{route:frame}': ['p(95)<750', 'p(99)<1500'],
    'http_req_duration{route:frame_by_hash}': ['p(95)<250', 'p(99)<1000'],
  }),
};

export function setup() {
  return { owners: owners() };
}

const state = newHubState();
const RENDITION = { kind: 'rendition' };

export default function (data) {
  const h = hub(pairs(data.owners), __VU - 1);
  const profile = PROFILES[(__VU - 1) % PROFILES.length];
  const res = http.get(
    latestUrl(h.camera, profile.query || ''),
    params(h, 'frame', { headers: profile.headers || {}, responseCallback: OK, tags: { hints: profile.name } }),
  );
  // Every 200 is checked, whatever its Content-Type (checkAnswer requires image/jpeg).
  if (res.status === 200) {
    const variant = res.headers['X-Frame-Variant'];
    check(
      res,
      {
        'a frame carries X-Frame-Variant of a known rendition': () => VARIANTS.indexOf(variant) >= 0,
        'Accept-CH announces Save-Data, ECT, Downlink': (r) =>
          /save-data/i.test(r.headers['Accept-Ch'] || '') && /ect/i.test(r.headers['Accept-Ch'] || ''),
        'the rendition asked for (or implied by Save-Data) is served': () =>
          !profile.expect || variant === profile.expect,
      },
      RENDITION,
    );
    // Full frames by their watermark; renditions through their source (lib/scenario.js). An
    // answer without X-Frame-Variant is taken for a full frame: a rendition passed off as one
    // carries no watermark and fails.
    state.held = true;
    state.full = checkAnswer(res, h, 'frame');
    state.etag = res.headers.Etag || null;
    state.location = res.headers['Content-Location'] || null;
    state.hash = locationHash(state.location, h.camera);
    if (!state.full) state.renditionUrl = `${BASE_URL}${state.location}`;
  }
  // One iteration in four resumes a full frame in two ranges; one in eight a rendition.
  const roll = Math.random();
  if (roll < 0.25) fetchResumed(h, state, { responseCallback: OK });
  else if (roll < 0.375) resumeRendition(h);
  sleep(0.5 + Math.random() * 1.5);
}

/**
 * Fetches a rendition by hash whole (privacy-checked through its source, as any rendition), then
 * in two ranges, resuming with If-Range. Only hubs that were served a rendition hold one.
 */
function resumeRendition(h) {
  if (!state.renditionUrl) return;
  const whole = http.get(state.renditionUrl, params(h, 'frame_by_hash', { responseCallback: OK }));
  check(whole, { 'a rendition by hash answers 200': (r) => r.status === 200 }, RENDITION);
  if (whole.status !== 200) return;
  checkAnswer(whole, h, 'frame_by_hash');
  const len = whole.body.byteLength;
  const split = between(1, Math.max(1, len - 1));
  const first = http.get(
    state.renditionUrl,
    params(h, 'frame_by_hash', { responseCallback: OK, headers: { Range: `bytes=0-${split - 1}` } }),
  );
  const second = http.get(
    state.renditionUrl,
    params(h, 'frame_by_hash', {
      responseCallback: OK,
      headers: { Range: `bytes=${split}-`, 'If-Range': whole.headers.Etag || '' },
    }),
  );
  // A range answered whole is still a frame answer: privacy-checked like any.
  if (first.status === 200) checkAnswer(first, h, 'frame_by_hash');
  if (second.status === 200) checkAnswer(second, h, 'frame_by_hash');
  check(
    null,
    {
      'a resumed rendition reassembles to the whole rendition': () => {
        if (first.status !== 206 || second.status !== 206) return false;
        const a = new Uint8Array(first.body);
        const b = new Uint8Array(second.body);
        const w = new Uint8Array(whole.body);
        if (a.length + b.length !== w.length) return false;
        for (let i = 0; i < a.length; i++) if (a[i] !== w[i]) return false;
        for (let i = 0; i < b.length; i++) if (b[i] !== w[a.length + i]) return false;
        return true;
      },
    },
    RENDITION,
  );
}
