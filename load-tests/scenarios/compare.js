// compare: one workload against one target (framecache, or nginx / Varnish in front of the
// same camsim); `load-tests/run compare` runs it against each target in alternating rounds.
// The same script, client settings and frames for all. Every answer read into JavaScript is
// privacy-checked, and nothing else is read from it. What a hub keeps between polls (the ETag,
// and the hash in Content-Location) is not read: only framecache's answers carry it, so reading
// it would cost k6 more per framecache answer than per peer answer.
//
//   WORKLOAD=warm  every (owner, camera) once: fills the cache before the hit rounds
//   WORKLOAD=hit   VUS hubs, each polling one (owner, camera) back to back: all cache hits.
//                  One answer in CHECK_EVERY (default 8) per hub is read into JavaScript and
//                  privacy-checked, the others are discarded as they arrive: copying every
//                  body into JavaScript is what limits k6 on a small machine. The threshold
//                  on privacy_checked_answers holds the run to that share of its 200s (each
//                  hub checks its first poll and every CHECK_EVERY-th after it, so at least
//                  1 / CHECK_EVERY of them), and no less.
//   WORKLOAD=miss  every (owner, camera) once, asked by 4 hubs at the same instant (one
//                  http.batch): each a cold key, so the cache must fetch it once and coalesce
//                  the other 3 (nginx proxy_cache_lock, Varnish's waiting list, framecache's
//                  flights)
//
// In warm and miss every 200 is privacy-checked.

import http from 'k6/http';
import exec from 'k6/execution';

import { hub, latestUrl, owners, pairs, params } from '../lib/hubs.js';
import { checkAnswer, checkThresholds, checkedAnswers, duration, vus } from '../lib/scenario.js';
import { num } from '../lib/env.js';

const WORKLOAD = __ENV.WORKLOAD || 'hit';
const PAIRS = num('PAIRS', 0); // set by the runner: how many (owner, camera) pairs exist
const OK = http.expectedStatuses(200);
const CHECK_EVERY = num('CHECK_EVERY', 8);
let polls = 0;

const SCENARIOS = {
  warm: { executor: 'shared-iterations', vus: Math.min(vus(32), PAIRS || 1), iterations: PAIRS || 1, maxDuration: '120s' },
  hit: { executor: 'constant-vus', vus: vus(32), duration: duration('10s'), gracefulStop: '5s' },
  miss: { executor: 'shared-iterations', vus: vus(32), iterations: PAIRS || 1, maxDuration: '300s' },
};

export const options = {
  batch: 4,
  batchPerHost: 4,
  scenarios: { [WORKLOAD]: SCENARIOS[WORKLOAD] },
  thresholds: Object.assign({}, checkThresholds(WORKLOAD === 'hit' ? 1 / CHECK_EVERY : 1), {
    'http_req_failed{route:frame}': ['rate<0.001'],
    'http_reqs{route:frame}': ['count>0'],
    'http_req_duration{route:frame}': ['p(99)<10000'],
  }),
};

export function setup() {
  return { owners: owners() };
}

let all = null;

/** The privacy checks of a latest-frame answer: every 200, whatever its Content-Type. */
function checkLatest(res, h) {
  if (res.status === 200) checkAnswer(res, h, 'frame');
}

export default function (data) {
  if (all === null) all = pairs(data.owners);
  if (WORKLOAD === 'hit') {
    const h = hub(all, exec.vu.idInTest - 1);
    const checked = polls++ % CHECK_EVERY === 0;
    const res = http.get(
      latestUrl(h.camera),
      params(h, 'frame', { responseCallback: OK, responseType: checked ? 'binary' : 'none' }),
    );
    // Polls send no If-None-Match: every answer is a frame.
    if (checked) checkLatest(res, h);
    else if (res.status === 200) checkedAnswers.add(false);
    return;
  }
  const h = hub(all, exec.scenario.iterationInTest);
  const copies = WORKLOAD === 'miss' ? 4 : 1;
  const requests = [];
  for (let i = 0; i < copies; i++) {
    requests.push(['GET', latestUrl(h.camera), null, params(h, 'frame', { responseCallback: OK })]);
  }
  for (const res of http.batch(requests)) checkLatest(res, h);
}
