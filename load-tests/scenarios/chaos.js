// chaos: the camera backend misbehaves in every way camsim knows (latency, resets, truncated
// bodies, 5xx, hangs, frames of the wrong owner or camera, bad or missing signatures, wrong
// content types and hashes, and the incident itself: another camera's frame under the requested
// camera's headers) while hubs poll, fetch by hash, resume ranges, and hang up early.
//
// framecache must refuse every bad origin answer (counted in
// framecache_origin_rejections_total, which the runner requires to be > 0) and answer with a
// frame of the right camera (fresh, or stale within stale_if_error_secs) or a 502/503/504.
// The privacy checks must hold for every frame a hub receives.

import http from 'k6/http';
import { check, sleep } from 'k6';

import { clearFaults, setFaults } from '../lib/camsim.js';
import { hub, owners, pairs, streamUrl, params } from '../lib/hubs.js';
import {
  CHECK_THRESHOLDS,
  between,
  duration,
  fetchByHash,
  fetchLatest,
  fetchResumed,
  newHubState,
  vus,
} from '../lib/scenario.js';

// Origin answers a hub may see while the backend misbehaves; anything else is an error.
const EXPECTED = http.expectedStatuses(200, 206, 304, 502, 503, 504);

export const FAULTS = {
  latency_ms: [0, 150],
  reset_rate: 0.03,
  truncate_rate: 0.03,
  error_rate: 0.05,
  hang_rate: 0.02,
  hang_ms: 4000,
  wrong_owner_rate: 0.02,
  wrong_camera_rate: 0.03,
  leak_rate: 0.08,
  bad_signature_rate: 0.02,
  missing_signature_rate: 0.01,
  wrong_content_type_rate: 0.01,
  wrong_hash_rate: 0.02,
};

export const options = {
  scenarios: {
    chaos: { executor: 'constant-vus', vus: vus(24), duration: duration('30s'), gracefulStop: '10s' },
  },
  thresholds: Object.assign({}, CHECK_THRESHOLDS, {
    // Requests a hub did not abandon on purpose: gateway errors are expected, nothing else.
    'http_req_failed{hangup:no}': ['rate<0.01'],
    'checks{kind:status}': ['rate==1'],
    // response_timeout_ms is 3 s; a hung origin costs at most that plus a coalescing wait.
    'http_req_duration{route:frame,hangup:no}': ['p(95)<3500'],
    'http_req_duration{route:frame_by_hash,hangup:no}': ['p(95)<3500'],
  }),
};

export function setup() {
  setFaults(FAULTS);
  return { owners: owners() };
}

const state = newHubState();

export default function (data) {
  const h = hub(pairs(data.owners), __VU - 1);
  // One request in ten is from a hub that gives up after 5–150 ms (a phone leaving Wi-Fi).
  const hangup = Math.random() < 0.1;
  const extra = {
    responseCallback: EXPECTED,
    timeout: hangup ? `${between(5, 150)}ms` : '10s',
    tags: { hangup: hangup ? 'yes' : 'no' },
  };
  const res = fetchLatest(h, state, extra);
  if (!hangup) statusCheck(res);
  const roll = Math.random();
  if (roll < 0.3) {
    const r = fetchByHash(h, state, { responseCallback: EXPECTED, tags: { hangup: 'no' } });
    if (r) statusCheck(r);
  } else if (roll < 0.36) {
    fetchResumed(h, state, { responseCallback: EXPECTED, tags: { hangup: 'no' } });
  } else if (roll < 0.38) {
    // An MJPEG subscriber that drops the connection mid-stream.
    http.get(
      streamUrl(h.camera),
      params(h, 'stream', {
        responseType: 'none',
        timeout: `${between(300, 1500)}ms`,
        tags: { hangup: 'yes' },
      }),
    );
  }
  sleep(Math.random() * 0.2);
}

export function teardown() {
  clearFaults();
}

function statusCheck(res) {
  check(
    res,
    {
      'status is a frame, 304 or a gateway error': (r) =>
        [200, 206, 304, 502, 503, 504].indexOf(r.status) >= 0,
    },
    { kind: 'status' },
  );
}
