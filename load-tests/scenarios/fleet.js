// fleet: the steady state of a deployment. Many owners, each with a few cameras (one shared
// with a neighbour); every hub shows one camera and polls its latest frame every 1–10 s with
// If-None-Match, and one poll in five also fetches the frame by its content address (as a hub
// does when it follows Content-Location). Every frame received is privacy-checked.

import http from 'k6/http';
import { sleep } from 'k6';

import { hub, owners, pairs } from '../lib/hubs.js';
import {
  CHECK_THRESHOLDS,
  duration,
  fetchByHash,
  fetchLatest,
  newHubState,
  vus,
} from '../lib/scenario.js';

const OK = http.expectedStatuses(200, 304);

export const options = {
  scenarios: {
    // One VU is one hub; they start over the first 10 s, as hubs of a fleet are not in phase.
    fleet: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: '10s', target: vus(600) },
        { duration: duration('60s'), target: vus(600) },
      ],
      gracefulRampDown: '10s',
    },
  },
  thresholds: Object.assign({}, CHECK_THRESHOLDS, {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{route:frame}': ['p(95)<100', 'p(99)<500'],
    'http_req_duration{route:frame_by_hash}': ['p(95)<100', 'p(99)<500'],
  }),
};

export function setup() {
  return { owners: owners() };
}

const state = newHubState();

export default function (data) {
  const h = hub(pairs(data.owners), __VU - 1);
  fetchLatest(h, state, { responseCallback: OK });
  if (Math.random() < 0.2) fetchByHash(h, state, { responseCallback: OK });
  sleep(1 + Math.random() * 9);
}
