// The camera backend's control endpoints (camsim/src/control.rs).

import http from 'k6/http';

import { CAMSIM_URL } from './env.js';

const CONTROL = { tags: { route: 'control' }, responseCallback: http.expectedStatuses(200) };

/** `{owner: [cameras]}`: who may read which camera. */
export function topology() {
  const res = http.get(`${CAMSIM_URL}/topology`, CONTROL);
  if (res.status !== 200) throw new Error(`camsim /topology answered ${res.status}`);
  return res.json();
}

/** Replaces the faults camsim injects (same shape as camsim's --faults-file). */
export function setFaults(faults) {
  const res = http.put(`${CAMSIM_URL}/control/faults`, JSON.stringify(faults), CONTROL);
  if (res.status !== 200) throw new Error(`camsim refused the faults: ${res.status} ${res.body}`);
}

/** No faults. */
export function clearFaults() {
  setFaults({});
}
