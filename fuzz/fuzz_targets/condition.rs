//! `Range`, `If-None-Match` and `If-Range`: `condition::Answer::decide`.
//!
//! Input: a first line `LEN` or `LEN head` (the frame's length; `head` for a HEAD request),
//! then request headers, one `name: value` a line. The frame's ETag is [`ETAG`].
//!
//! Invariants: it never panics; a partial answer lies within the frame, start ≤ end; 304 only
//! with `If-None-Match`; 206, 416 or an ignored range only for a GET with `Range`; and a
//! plain single range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) with no other condition gets
//! exactly the bytes RFC 9110 §14.1.2 names.

#![no_main]

use framecache::delivery::condition::Answer;
use framecache_fuzz::{first, head_and_body, headers};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

/// The quoted ETag of the frame: blake3 of no bytes.
const ETAG: &str = "\"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262\"";

/// What RFC 9110 gives a lone, plainly written `bytes=` range on a frame of `len` bytes, or
/// `None` for anything else.
fn expected(headers: &HeaderMap, len: usize) -> Option<Answer> {
    let mut values = headers.get_all(http::header::RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let spec = value.to_str().ok()?.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let number = |s: &str| s.parse::<u64>().ok().and_then(|n| usize::try_from(n).ok());
    let satisfiable = |start: usize, end: usize| {
        Some(if start < len {
            Answer::Partial {
                start,
                end: end.min(len - 1),
            }
        } else {
            Answer::Unsatisfiable
        })
    };
    match (digits(first), digits(last)) {
        (true, true) => {
            let (start, end) = (number(first)?, number(last)?);
            if start > end {
                return Some(Answer::FullIgnoringRange);
            }
            satisfiable(start, end)
        }
        (true, false) if last.is_empty() => satisfiable(number(first)?, usize::MAX),
        (false, true) if first.is_empty() => {
            let n = number(last)?;
            if n == 0 || len == 0 {
                Some(Answer::Unsatisfiable)
            } else {
                satisfiable(len - n.min(len), len - 1)
            }
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let (lines, _) = head_and_body(data);
    let Some((request, lines)) = lines.split_first() else {
        return;
    };
    let request = String::from_utf8_lossy(request);
    let mut words = request.split(' ');
    let Some(Ok(len)) = words.next().map(str::parse::<usize>) else {
        return;
    };
    let head = words.next() == Some("head");
    let headers = headers(lines.iter().copied());

    let answer = Answer::decide(&headers, head, ETAG, len);

    let has = |name| headers.contains_key(name);
    let ranged = has(http::header::RANGE) && !head;
    match answer {
        Answer::Partial { start, end } => {
            assert!(start <= end && end < len, "{answer:?} of {len} bytes");
            assert!(ranged);
        }
        Answer::Unsatisfiable | Answer::FullIgnoringRange => assert!(ranged, "{answer:?}"),
        Answer::NotModified => assert!(has(http::header::IF_NONE_MATCH)),
        Answer::Full => {}
    }

    let plain = ranged && !has(http::header::IF_NONE_MATCH) && !has(http::header::IF_RANGE);
    if let Some(expected) = expected(&headers, len).filter(|_| plain) {
        assert_eq!(answer, expected, "{:?}", first(&headers, "range"));
    }
});
