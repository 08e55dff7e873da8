// low_bandwidth: hubs on poor networks. Some send `Save-Data: on`, some the ECT / Downlink
// client hints, some ask for a rendition explicitly (`variant=full|medium|thumb`), some fetch
// frames in two ranges and resume with If-Range.
//
// Renditions are re-encoded and carry no camsim watermark, so their privacy is checked through
// their source: the rendition's Content-Location names the source full frame by hash
// (`/v1/cameras/{camera}/frames/{hash}?variant=NAME`); the hub fetches that frame without a
// variant, checks its watermark like any frame, and checks that both carry the same
// X-Frame-Seq. Full frames are checked directly.
//
// Needs the renditions of issue 4 (variant=medium|thumb, X-Frame-Variant, Accept-CH): against a
// proxy without them the rendition checks fail, as they should.

import http from 'k6/http';
import { check, sleep } from 'k6';

import { PRIVACY, checkFrame, locationHash } from '../lib/frame.js';
import { byHashUrl, hub, isFrame, latestUrl, owners, pairs, params } from '../lib/hubs.js';
import {
  PRIVACY_THRESHOLDS,
  between,
  checkedFrames,
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
  thresholds: Object.assign({}, PRIVACY_THRESHOLDS, {
    http_req_failed: ['rate<0.001'],
    'checks{kind:rendition}': ['rate==1'],
    'http_req_duration{route:frame}': ['p(95)<250', 'p(99)<1000'],
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
    // A full frame (or an answer that does not say, which the check above already fails) is
    // checked directly: a rendition passed off as one carries no watermark and fails too.
    if ((variant === 'full' || variant === undefined) && isFrame(res)) {
      checkFrame(res.body, res.headers['X-Frame-Seq'], h, h.camera, 'frame');
      checkedFrames.add(1);
      state.hash = locationHash(res.headers['Content-Location'], h.camera);
      state.etag = res.headers.Etag || null;
    } else if (variant) {
      checkRendition(h, res, variant);
    }
  }
  // One iteration in four resumes a full frame in two ranges; one in eight a rendition.
  const roll = Math.random();
  if (roll < 0.25) fetchResumed(h, state, { responseCallback: OK });
  else if (roll < 0.375) resumeRendition(h);
  sleep(0.5 + Math.random() * 1.5);
}

/** A rendition's privacy, through its source frame; and that it is smaller than its source. */
function checkRendition(h, res, variant) {
  const location = res.headers['Content-Location'] || '';
  const hash = locationHash(location, h.camera);
  check(
    res,
    {
      'a rendition names its source frame and variant in Content-Location': () =>
        hash !== null && location.endsWith(`?variant=${variant}`),
    },
    RENDITION,
  );
  if (!hash) return;
  const source = http.get(byHashUrl(h.camera, hash), params(h, 'frame_by_hash', { responseCallback: OK }));
  if (!isFrame(source)) {
    check(source, { 'privacy: the source of a rendition can be fetched': () => false }, PRIVACY);
    return;
  }
  checkFrame(source.body, source.headers['X-Frame-Seq'], h, h.camera, 'frame_by_hash');
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
    {
      'a rendition is smaller than its source frame': (r) => r.body.byteLength < source.body.byteLength,
      'by-hash answers Content-Type image/jpeg': () => isFrame(source),
    },
    RENDITION,
  );
  state.renditionUrl = byHashUrl(h.camera, hash, `variant=${variant}`);
}

/** Fetches a rendition by hash in two ranges, resuming with If-Range. */
function resumeRendition(h) {
  if (!state.renditionUrl) return;
  const whole = http.get(state.renditionUrl, params(h, 'frame_by_hash', { responseCallback: OK }));
  if (whole.status !== 200) return;
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
