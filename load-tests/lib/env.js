// Settings every scenario reads from the environment; `load-tests/run` sets them.
//
//   BASE_URL     the hub-facing address under test (framecache, or a peer in `compare`)
//   CAMSIM_URL   the camera backend's address (its /topology, /stats and /control/faults)
//   SECRET_FILE  the HS256 secret of hub tokens (auth.secret_file)
//   AUDIENCE     the tokens' `aud` (auth.audience), default "framecache"
//   TARGET       framecache | nginx | varnish: only framecache verifies tokens and sends
//                Cache-Status; the peers learn the owner from an X-Hub-Owner header

export const BASE_URL = required('BASE_URL');
export const CAMSIM_URL = required('CAMSIM_URL');
export const SECRET_FILE = required('SECRET_FILE');
export const AUDIENCE = __ENV.AUDIENCE || 'framecache';
export const TARGET = __ENV.TARGET || 'framecache';

/** A number from the environment, or `fallback`. */
export function num(name, fallback) {
  const value = __ENV[name];
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`${name}: expected a number, got ${value}`);
  return n;
}

function required(name) {
  const value = __ENV[name];
  if (!value) throw new Error(`${name} is not set (load-tests/run sets it)`);
  return value;
}
