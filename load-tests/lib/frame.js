// What a hub can check about a frame without decoding it: camsim writes
// `framecache-sim camera={camera} seq={seq}` into a JPEG comment of every frame it captures
// (camsim/src/jpeg.rs). A hub that receives another camera's frame sees another camera's name
// there, whatever the headers claim.

import { check } from 'k6';

const PREFIX = 'framecache-sim camera=';
const PREFIX_BYTES = Array.from(PREFIX, (c) => c.charCodeAt(0));
// Characters of camera ids (SPEC: [A-Za-z0-9._-]) and of the " seq=N" that follows.
const ID_BYTE = /[A-Za-z0-9._-]/;

/**
 * The watermark of a JPEG body (an ArrayBuffer, `responseType: 'binary'`): `{camera, seq}`, or
 * null when the body carries none. The whole body is searched, so a comment anywhere counts.
 */
export function watermark(body) {
  if (!body || typeof body === 'string') return null;
  const bytes = new Uint8Array(body);
  const first = PREFIX_BYTES[0];
  const last = bytes.length - PREFIX_BYTES.length;
  for (let i = 0; i <= last; i++) {
    if (bytes[i] !== first) continue;
    let j = 1;
    while (j < PREFIX_BYTES.length && bytes[i + j] === PREFIX_BYTES[j]) j++;
    if (j < PREFIX_BYTES.length) continue;
    let k = i + PREFIX_BYTES.length;
    let camera = '';
    while (k < bytes.length && ID_BYTE.test(String.fromCharCode(bytes[k]))) {
      camera += String.fromCharCode(bytes[k++]);
    }
    const rest = ' seq=';
    let ok = true;
    for (let r = 0; r < rest.length; r++, k++) {
      if (bytes[k] !== rest.charCodeAt(r)) ok = false;
    }
    let seq = '';
    while (ok && k < bytes.length && bytes[k] >= 48 && bytes[k] <= 57) {
      seq += String.fromCharCode(bytes[k++]);
    }
    if (ok && camera && seq) return { camera, seq };
  }
  return null;
}

/** Tags of the privacy checks: the thresholds demand a rate of exactly 1 over these. */
export const PRIVACY = { privacy: 'yes' };

/**
 * The privacy checks of one frame body, which must be a whole frame as camsim captured it (a
 * 200, or the concatenation of resumed ranges): its watermark names the camera asked for, that
 * camera is one the hub's token grants, and the attested X-Frame-Seq is the watermark's.
 * Returns the watermark (or null).
 */
export function checkFrame(body, seqHeader, hub, camera, route) {
  const mark = watermark(body);
  const whole = isWholeJpeg(body);
  check(
    mark,
    {
      'privacy: frame is a whole JPEG (SOI to EOI)': () => whole,
      'privacy: frame carries a watermark': (m) => m !== null,
      'privacy: watermark camera is the camera asked for': (m) => m !== null && m.camera === camera,
      'privacy: watermark camera is granted by the token': (m) =>
        m !== null && hub.cams.indexOf(m.camera) >= 0,
      'privacy: X-Frame-Seq is the watermark seq': (m) => m !== null && seqHeader === m.seq,
    },
    Object.assign({ route }, PRIVACY),
  );
  return mark;
}

/** Does `body` (an ArrayBuffer) start with a JPEG's SOI marker and end with its EOI? */
export function isWholeJpeg(body) {
  if (!body || typeof body === 'string' || body.byteLength < 4) return false;
  const bytes = new Uint8Array(body);
  const n = bytes.length;
  return bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[n - 2] === 0xff && bytes[n - 1] === 0xd9;
}

/** The hash of a Content-Location `/v1/cameras/{camera}/frames/{hash}[?…]`, or null. */
export function locationHash(location, camera) {
  if (!location) return null;
  const prefix = `/v1/cameras/${camera}/frames/`;
  if (!location.startsWith(prefix)) return null;
  const hash = location.slice(prefix.length).split('?')[0];
  return /^[0-9a-f]{64}$/.test(hash) ? hash : null;
}

/**
 * The complete parts of an MJPEG body (`multipart/x-mixed-replace`, possibly cut off where the
 * hub stopped reading): `[{seq, body}]`, `body` an ArrayBuffer. A part cut short is left out.
 */
export function mjpegParts(body) {
  if (!body || typeof body === 'string') return [];
  const bytes = new Uint8Array(body);
  const parts = [];
  let i = 0;
  for (;;) {
    const start = find(bytes, DASHES, i);
    if (start < 0) break;
    const headEnd = find(bytes, CRLFCRLF, start);
    if (headEnd < 0) break;
    let head = '';
    for (let k = start; k < headEnd; k++) head += String.fromCharCode(bytes[k]);
    const length = Number((/content-length:\s*(\d+)/i.exec(head) || [])[1]);
    const seq = (/x-frame-seq:\s*(\d+)/i.exec(head) || [])[1];
    const from = headEnd + 4;
    if (!Number.isFinite(length) || from + length > bytes.length) break;
    parts.push({ seq, body: body.slice(from, from + length) });
    i = from + length;
  }
  return parts;
}

const DASHES = Array.from('--framecache-frame\r\n', (c) => c.charCodeAt(0));
const CRLFCRLF = [13, 10, 13, 10];

function find(bytes, needle, from) {
  const last = bytes.length - needle.length;
  for (let i = from; i <= last; i++) {
    let j = 0;
    while (j < needle.length && bytes[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}
