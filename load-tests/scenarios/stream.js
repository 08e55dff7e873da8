// stream: MJPEG subscribers. Each VU is a hub that watches a camera's stream for 5–15 s, then
// hangs up and tunes in again; every complete part it received is privacy-checked (watermark
// camera = the camera asked for and granted, X-Frame-Seq = the watermark's seq) and seqs must
// only go up within a subscription. Slow subscribers (reading at a few KB/s, which k6 cannot
// do) are run beside k6 by `load-tests/run stream` (load-tests/slow_subscribers.py) and report
// into the same summary.

import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

import { checkFrame, mjpegParts } from '../lib/frame.js';
import { hub, owners, pairs, params, streamUrl } from '../lib/hubs.js';
import { CHECK_THRESHOLDS, between, checkedFrames, duration, vus } from '../lib/scenario.js';

const partsReceived = new Counter('stream_parts_received');

export const options = {
  scenarios: {
    stream: { executor: 'constant-vus', vus: vus(100), duration: duration('30s'), gracefulStop: '20s' },
  },
  thresholds: Object.assign({}, CHECK_THRESHOLDS, {
    stream_parts_received: ['count>0'],
    // Time to the response head (every stream ends in a deliberate hang-up, so no error rate).
    'http_req_waiting{route:stream}': ['p(95)<500', 'p(99)<1500'],
    'checks{kind:stream}': ['rate==1'],
  }),
};

export function setup() {
  return { owners: owners() };
}

export default function (data) {
  const h = hub(pairs(data.owners), __VU - 1);
  const watch = between(5, 15);
  // The hub hangs up after `watch` seconds: k6 reports a timeout and keeps what arrived.
  const res = http.get(
    streamUrl(h.camera),
    params(h, 'stream', { timeout: `${watch}s`, tags: { hangup: 'yes' } }),
  );
  const parts = mjpegParts(res.body);
  partsReceived.add(parts.length);
  let last = -1;
  let rising = true;
  for (const part of parts) {
    checkFrame(part.body, part.seq, h, h.camera, 'stream');
    checkedFrames.add(1);
    if (Number(part.seq) <= last) rising = false;
    last = Number(part.seq);
  }
  check(
    res,
    {
      'a subscriber gets at least one frame per 3 s watched': () => parts.length >= Math.floor(watch / 3),
      'stream seqs only go up': () => rising,
    },
    { kind: 'stream' },
  );
}
