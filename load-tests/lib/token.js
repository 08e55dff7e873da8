// Hub tokens (SPEC "Hub tokens"): HS256 JWTs minted here with k6/crypto, the same shape as
// `framecache token` prints.

import crypto from 'k6/crypto';
import encoding from 'k6/encoding';

import { AUDIENCE, SECRET_FILE } from './env.js';

// The secret is the file's bytes with one trailing newline dropped (auth.secret_file).
const SECRET = open(SECRET_FILE).replace(/\n$/, '');
const HEADER = encoding.b64encode(JSON.stringify({ alg: 'HS256', typ: 'JWT' }), 'rawurl');

// TOKEN_EXP (seconds since the epoch) pins the expiry, so that separate k6 runs mint the same
// tokens: the peers of `compare` key their caches on the Authorization header.
const TOKEN_EXP = Number(__ENV.TOKEN_EXP || 0);

/** A token for `owner` granting `cams`, valid for `ttlSecs` (or until TOKEN_EXP). */
export function mint(owner, cams, ttlSecs = 3600) {
  const claims = {
    sub: owner,
    cams,
    aud: AUDIENCE,
    exp: TOKEN_EXP || Math.floor(Date.now() / 1000) + ttlSecs,
  };
  const input = `${HEADER}.${encoding.b64encode(JSON.stringify(claims), 'rawurl')}`;
  return `${input}.${crypto.hmac('sha256', SECRET, input, 'base64rawurl')}`;
}
