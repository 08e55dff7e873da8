// soak: an edge's hour under hostile load (`load-tests/run soak`, not in CI). Three kinds of hub
// at once, while camsim misbehaves at a low rate (leaked frames of another camera included) and
// load-tests/attacks.py, beside k6, attacks the proxy at a low rate with the last owners of the
// topology:
//
//   fleet    a steady fleet: one VU is a hub showing one camera of the first FLEET_OWNERS
//            owners, polling its latest frame every 2–10 s with If-None-Match, one poll in five
//            also by content address.
//   churn    owners and cameras coming and going, past the cache budget (the runner gives the
//            soak a small cache.max_bytes): each iteration is a hub of a random owner of the
//            middle of the topology watching one random camera for 10–40 s, polling every
//            1–3 s; one departing owner in five unlinks its account (POST /admin/purge).
//   viewers  a few MJPEG subscribers of fleet owners, 10–20 s each, every part checked.
//
// Every frame a hub receives is privacy-checked (the watermark names the camera asked for,
// which the token grants, and the attested seq); every answer must be one a hub may get while
// the backend misbehaves (a frame, 304, or 502/503/504); a hub's latest frame and a stream's
// parts never go back to an older seq (what a failed order check saw goes to k6's log). The runner samples the proxy's RSS,
// file descriptors, the host's TCP memory and the cache's figures beside it.

import http from 'k6/http';
import { check, sleep } from 'k6';

import { clearFaults, setFaults } from '../lib/camsim.js';
import { num } from '../lib/env.js';
import { checkFrame, mjpegParts } from '../lib/frame.js';
import { owners, pairs, params, streamUrl } from '../lib/hubs.js';
import {
  CHECK_THRESHOLDS,
  between,
  checkedFrames,
  duration,
  fetchByHash,
  fetchLatest,
  newHubState,
  vus,
} from '../lib/scenario.js';

// The last owners of the topology are attacks.py's (it takes the same number from the end).
const ATTACKER_OWNERS = 3;
const FLEET_OWNERS = num('FLEET_OWNERS', 34);
const ADMIN_URL = __ENV.ADMIN_URL || '';
const ADMIN_TOKEN = __ENV.ADMIN_TOKEN_FILE ? open(__ENV.ADMIN_TOKEN_FILE).replace(/\n$/, '') : '';

// What a hub may be answered while the backend misbehaves; anything else is an error.
const FRAME_STATUSES = [200, 304, 502, 503, 504];
const BY_HASH_STATUSES = [200, 502, 503, 504];
const EXPECTED = http.expectedStatuses(...FRAME_STATUSES);

// camsim's faults at a low rate: every kind, about one origin answer in twelve damaged.
export const FAULTS = {
  latency_ms: [0, 50],
  reset_rate: 0.005,
  truncate_rate: 0.005,
  error_rate: 0.01,
  hang_rate: 0.002,
  hang_ms: 4000,
  wrong_owner_rate: 0.005,
  wrong_camera_rate: 0.005,
  leak_rate: 0.02,
  bad_signature_rate: 0.005,
  missing_signature_rate: 0.003,
  wrong_content_type_rate: 0.003,
  wrong_hash_rate: 0.005,
};

const length = duration('1h');

export const options = {
  scenarios: {
    fleet: { executor: 'constant-vus', exec: 'fleet', vus: vus(100), duration: length, gracefulStop: '30s' },
    churn: {
      executor: 'constant-vus',
      exec: 'churn',
      vus: num('CHURN_VUS', 10),
      duration: length,
      gracefulStop: '45s',
    },
    viewers: {
      executor: 'constant-vus',
      exec: 'viewer',
      vus: num('VIEWER_VUS', 3),
      duration: length,
      gracefulStop: '30s',
    },
  },
  thresholds: Object.assign({}, CHECK_THRESHOLDS, {
    'checks{kind:status}': ['rate==1'],
    'checks{kind:stream}': ['rate==1'],
    'checks{kind:purge}': ['rate==1'],
    'checks{kind:order}': ['rate==1'],
    // Not limits (figures do not fail a soak): k6 exports a sub-metric only when it has a
    // threshold, and the report prints these.
    'http_req_duration{route:frame}': ['max>=0'],
    'http_req_duration{route:frame_by_hash}': ['max>=0'],
  }),
};

export function setup() {
  const all = owners();
  if (all.length < FLEET_OWNERS + ATTACKER_OWNERS + 1) {
    throw new Error(`soak: ${all.length} owners in camsim's topology, fewer than the fleet, churn and attackers need`);
  }
  setFaults(FAULTS);
  return {
    fleet: pairs(all.slice(0, FLEET_OWNERS)),
    churn: all.slice(FLEET_OWNERS, all.length - ATTACKER_OWNERS),
  };
}

export function teardown() {
  clearFaults();
}

// --- fleet ---------------------------------------------------------------------------------------

const state = newHubState();
let started = false;

export function fleet(data) {
  const h = data.fleet[(__VU - 1) % data.fleet.length];
  // Hubs of a fleet are not in phase.
  if (!started) {
    started = true;
    sleep(Math.random() * 10);
  }
  poll(h, state, 0.2);
  sleep(2 + Math.random() * 8);
}

// --- churn ---------------------------------------------------------------------------------------

export function churn(data) {
  const o = data.churn[between(0, data.churn.length - 1)];
  const h = { owner: o.owner, cams: o.cams, token: o.token, camera: o.cams[between(0, o.cams.length - 1)] };
  const s = newHubState();
  const until = Date.now() + between(10, 40) * 1000;
  while (Date.now() < until) {
    poll(h, s, 0.33);
    sleep(1 + Math.random() * 2);
  }
  if (ADMIN_URL && Math.random() < 0.2) unlink(o.owner);
}

/** The owner unlinks its account: its entries go at once. */
function unlink(owner) {
  const res = http.post(`${ADMIN_URL}/admin/purge`, JSON.stringify({ owner }), {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    tags: { route: 'admin', name: '/admin/purge' },
    responseCallback: http.expectedStatuses(200),
  });
  check(
    res,
    { 'purge answers 200 {"purged": N}': (r) => r.status === 200 && Number.isInteger(safeJson(r).purged) },
    { kind: 'purge' },
  );
}

// --- viewers -------------------------------------------------------------------------------------

export function viewer(data) {
  const h = data.fleet[between(0, data.fleet.length - 1)];
  const watch = between(10, 20);
  // The hub hangs up after `watch` seconds: k6 reports a timeout and keeps what arrived.
  const res = http.get(
    streamUrl(h.camera, 'variant=full'),
    params(h, 'stream', { timeout: `${watch}s`, tags: { hangup: 'yes' } }),
  );
  const parts = mjpegParts(res.body);
  let last = -1;
  let rising = true;
  for (const part of parts) {
    checkFrame(part.body, part.seq, h, h.camera, 'stream');
    checkedFrames.add(1);
    if (Number(part.seq) <= last) rising = false;
    last = Number(part.seq);
  }
  // What a failed check cannot say, for whoever reads k6's log.
  if (!rising) {
    console.warn(`stream of ${h.camera} for ${h.owner}: seqs ${parts.map((p) => p.seq).join(' ')} (status ${res.status}, ${res.error || 'no error'})`);
  }
  check(
    res,
    {
      // No stream at all is a gateway error while the backend misbehaves, or a failure.
      'a viewer gets a frame, or a gateway error': (r) => parts.length > 0 || [502, 503, 504].indexOf(r.status) >= 0,
      'stream seqs only go up': () => rising,
    },
    { kind: 'stream' },
  );
  sleep(Math.random() * 2);
}

// --- shared --------------------------------------------------------------------------------------

/**
 * One poll of the latest frame, and in `byHash` of them the frame by its content address. A new
 * latest frame is never older than the one the hub shows (camsim's seqs only go up).
 */
function poll(h, s, byHash) {
  const shown = s.seq;
  const res = fetchLatest(h, s, { responseCallback: EXPECTED, timeout: '20s' });
  statusCheck(res, FRAME_STATUSES);
  if (res.status === 200 && shown !== null) {
    const back = Number(s.seq) < Number(shown);
    check(res, { 'a latest frame is never older than the one shown': () => !back }, { kind: 'order' });
    if (back) {
      const how = `Cache-Status '${res.headers['Cache-Status'] || ''}', Age ${res.headers.Age || '–'}`;
      console.warn(`latest of ${h.camera} for ${h.owner}: seq ${s.seq} after ${shown} (${how})`);
    }
  }
  if (Math.random() < byHash) {
    const r = fetchByHash(h, s, { responseCallback: EXPECTED, timeout: '20s' });
    if (r) statusCheck(r, BY_HASH_STATUSES);
  }
}

function statusCheck(res, statuses) {
  check(
    res,
    { 'status is a frame, 304 or a gateway error': (r) => statuses.indexOf(r.status) >= 0 },
    { kind: 'status' },
  );
}

function safeJson(res) {
  try {
    return res.json() || {};
  } catch (e) {
    return {};
  }
}
