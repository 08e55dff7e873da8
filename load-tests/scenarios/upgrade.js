// upgrade: a steady fleet through a binary upgrade (SPEC "Lifecycle"). Every hub shows one
// camera and polls its latest frame every 1–5 s with If-None-Match over a kept-alive
// connection; one poll in five also fetches the frame by its content address. The runner starts
// a second framecache with `--upgrade` a third of the way into the measured duration and sends
// SIGQUIT to the first, which hands its listening sockets over and drains.
//
// A hub, like any HTTP client, retries an idempotent GET once when it fails with a connection
// error (status 0: the old instance closed a kept-alive connection under it). The first attempt
// is therefore not a failure by itself; its retry decides. So http_req_failed counts the
// requests that failed after one retry (and any error status, which is not retried), and must
// stay at 0. Retries are counted in hub_retries by kind of error, those that then succeeded in
// hub_retries_ok. A refused connection is no closed kept-alive connection: the listening socket
// must be there throughout (SPEC), so it fails a check even when its retry succeeds.
//
// Every frame received is privacy-checked, as in fleet.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';

import { hub, owners, pairs } from '../lib/hubs.js';
import {
  CHECK_THRESHOLDS,
  duration,
  fetchByHash,
  fetchLatest,
  newHubState,
  vus,
} from '../lib/scenario.js';

// The warm-up before the measured duration; the runner times the handover from k6's start
// with the same figure (load-tests/run, UPGRADE_WARMUP_SECS).
const WARMUP = '10s';

const FIRST = http.expectedStatuses(0, 200, 304);
const OK = http.expectedStatuses(200, 304);

/** First attempts that failed with a connection error, tagged `kind` (see errorKind). */
const retries = new Counter('hub_retries');
/** Of those, the ones whose retry was answered 200 or 304. */
const retriedOk = new Counter('hub_retries_ok');

const KINDS = ['refused', 'dial', 'reset', 'broken_pipe', 'eof', 'timeout', 'other'];

export const options = {
  scenarios: {
    // One VU is one hub; they start over the warm-up, as hubs of a fleet are not in phase.
    upgrade: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: WARMUP, target: vus(200) },
        { duration: duration('60s'), target: vus(200) },
      ],
      gracefulRampDown: '10s',
    },
  },
  thresholds: Object.assign(
    {},
    CHECK_THRESHOLDS,
    {
      // Failed after one retry: none.
      http_req_failed: ['rate==0'],
      // Not limits: exported so that the runner's report.py can print them.
      hub_retries: ['count>=0'],
      hub_retries_ok: ['count>=0'],
    },
    Object.fromEntries(KINDS.map((kind) => [`hub_retries{kind:${kind}}`, ['count>=0']])),
  ),
};

export function setup() {
  return { owners: owners() };
}

const state = newHubState();

export default function (data) {
  const h = hub(pairs(data.owners), __VU - 1);
  withRetry('frame', (extra) => fetchLatest(h, state, extra));
  if (Math.random() < 0.2) withRetry('frame_by_hash', (extra) => fetchByHash(h, state, extra));
  sleep(1 + Math.random() * 4);
}

/**
 * Sends a GET through `send(extra)` (a lib/scenario.js fetch, which checks what it receives)
 * and, when it fails with a connection error, once more. Returns the last response (or null
 * when `send` made no request).
 */
function withRetry(route, send) {
  const first = send({ responseCallback: FIRST, tags: { attempt: '1' } });
  if (first === null || first.status !== 0) return first;
  const kind = errorKind(first);
  retries.add(1, { kind, route });
  check(
    first,
    { 'no hub connection refused during the upgrade': () => kind !== 'refused' },
    { kind: 'upgrade' },
  );
  console.warn(`retrying ${route} after a connection error: ${first.error_code} ${first.error}`);
  const second = send({ responseCallback: OK, tags: { attempt: '2' } });
  if (second !== null && (second.status === 200 || second.status === 304)) {
    retriedOk.add(1, { route });
  }
  return second;
}

/** The kind of a connection error, from k6's error code (and message for EOF). */
function errorKind(res) {
  const code = res.error_code;
  if (code === 1212) return 'refused';
  if (code >= 1210 && code <= 1213) return 'dial';
  if (code === 1220) return 'reset';
  if (code === 1201) return 'broken_pipe';
  if (code === 1050) return 'timeout';
  if (/EOF/.test(res.error || '')) return 'eof';
  return 'other';
}
