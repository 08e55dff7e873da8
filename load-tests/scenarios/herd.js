// herd: a reconnect storm on a cold cache (the Wyze 2024 condition). Thousands of hubs — many
// per owner and camera — come back at the same instant after an outage and keep polling about
// once a second, in phase. Each VU drives HUBS_PER_VU hubs with http.batch, one connection
// each. The figure is origin offload: origin requests per distinct (owner, camera, seq) frame
// received, where 1.00 means every frame was fetched once however many hubs asked.

import http from 'k6/http';
import { sleep } from 'k6';

import { BASE_URL, num } from '../lib/env.js';
import { hub, latestUrl, owners, pairs, params } from '../lib/hubs.js';
import {
  CHECK_THRESHOLDS,
  afterLatest,
  canFollow,
  checkAnswer,
  duration,
  newHubState,
  vus,
} from '../lib/scenario.js';

const HUBS_PER_VU = num('HUBS_PER_VU', 24);
const OK = http.expectedStatuses(200, 304);

export const options = {
  batch: HUBS_PER_VU,
  batchPerHost: HUBS_PER_VU,
  scenarios: {
    herd: { executor: 'constant-vus', vus: vus(100), duration: duration('20s'), gracefulStop: '10s' },
  },
  thresholds: Object.assign({}, CHECK_THRESHOLDS, {
    // A cold cache has nothing stale to fall back on: an origin fetch that fails (on a small
    // machine, a connect that takes longer than origin.connect_timeout_ms while k6 saturates
    // the cores) fails all the hubs that waited for it. Allowed up to 2 %, shown in the summary.
    http_req_failed: ['rate<0.02'],
    'http_req_duration{route:frame}': ['p(99)<3000'],
    'http_req_duration{route:frame_by_hash}': ['p(99)<3000'],
  }),
};

export function setup() {
  return { owners: owners() };
}

// This VU's hubs: numbers (VU-1)*HUBS_PER_VU .. VU*HUBS_PER_VU-1, spread over every
// (owner, camera) pair, so each pair has several hubs in different VUs.
let hubs = null;

export default function (data) {
  if (hubs === null) {
    const all = pairs(data.owners);
    hubs = [];
    for (let i = 0; i < HUBS_PER_VU; i++) {
      hubs.push({ hub: hub(all, (__VU - 1) * HUBS_PER_VU + i), state: newHubState() });
    }
  }
  const answers = http.batch(
    hubs.map(({ hub: h, state }) => {
      const headers = state.etag ? { 'If-None-Match': state.etag } : {};
      return ['GET', latestUrl(h.camera), null, params(h, 'frame', { headers, responseCallback: OK })];
    }),
  );
  answers.forEach((res, i) => afterLatest(res, hubs[i].hub, hubs[i].state));
  // One hub in ten follows Content-Location to the frame by hash (a cache hit).
  const follow = hubs.filter(({ hub: h, state }) => Math.random() < 0.1 && canFollow(h, state));
  if (follow.length) {
    const byHash = http.batch(
      follow.map(({ hub: h, state }) => [
        'GET',
        `${BASE_URL}${state.location}`,
        null,
        params(h, 'frame_by_hash', { responseCallback: OK }),
      ]),
    );
    byHash.forEach((res, i) => {
      if (res.status === 200) checkAnswer(res, follow[i].hub, 'frame_by_hash');
    });
  }
  sleep(0.9 + Math.random() * 0.2);
}
