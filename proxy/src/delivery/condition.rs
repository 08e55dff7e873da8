//! Conditional and range requests on frames (RFC 9110 §13, §14): `If-None-Match` → 304,
//! a single `Range` → 206 (`If-Range` resumes only the same bytes), unsatisfiable → 416.
//!
//! A hub on a poor link asks again with the ETag it has and gets a few hundred bytes instead
//! of a frame; a transfer cut off half way resumes where it stopped.

use http::HeaderMap;

/// How a frame request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole frame.
    Full,
    /// 200 with the whole frame although a range was asked: several ranges, or an `If-Range`
    /// naming other bytes.
    FullIgnoringRange,
    /// 304: the hub already has these bytes.
    NotModified,
    /// 206 with bytes `start..=end`.
    Partial { start: usize, end: usize },
    /// 416: the range lies outside the frame.
    Unsatisfiable,
}

impl Answer {
    /// Decides from the request headers, the frame's quoted ETag and its length. `Range` is
    /// defined for GET only (RFC 9110 §14.2): a HEAD request gets the whole frame's headers.
    pub fn decide(headers: &HeaderMap, head: bool, etag: &str, len: usize) -> Answer {
        if let Some(tags) = joined(headers, http::header::IF_NONE_MATCH) {
            // Weak comparison (RFC 9110 §13.1.2): `W/` is ignored.
            let matches = tags
                .split(',')
                .map(|t| t.trim())
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
            if matches {
                return Answer::NotModified;
            }
        }
        let Some(range) = joined(headers, http::header::RANGE).filter(|_| !head) else {
            return Answer::Full;
        };
        if let Some(if_range) = joined(headers, http::header::IF_RANGE) {
            // Strong comparison; a date is never strong enough for a frame.
            if if_range.trim() != etag {
                return Answer::FullIgnoringRange;
            }
        }
        match parse_range(&range, len) {
            Range::One(start, end) => Answer::Partial { start, end },
            Range::Unsatisfiable => Answer::Unsatisfiable,
            Range::Several | Range::Invalid => Answer::FullIgnoringRange,
        }
    }

    /// One answer of each kind a range request can get: every [`Answer::range_label`].
    pub const RANGED: [Answer; 3] = [
        Answer::Partial { start: 0, end: 0 },
        Answer::Unsatisfiable,
        Answer::FullIgnoringRange,
    ];

    /// The label of `framecache_partial_responses_total`, for answers to a range request.
    pub fn range_label(&self) -> Option<&'static str> {
        match self {
            Answer::Partial { .. } => Some("partial"),
            Answer::Unsatisfiable => Some("unsatisfiable"),
            Answer::FullIgnoringRange => Some("ignored"),
            Answer::Full | Answer::NotModified => None,
        }
    }
}

/// All values of a header joined with commas, if present and text.
fn joined(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Option<Vec<&str>> = values.map(|v| v.to_str().ok()).collect();
    parts.map(|p| p.join(","))
}

enum Range {
    One(usize, usize),
    Several,
    Unsatisfiable,
    Invalid,
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a body of `len` bytes.
fn parse_range(value: &str, len: usize) -> Range {
    // The unit is case-insensitive (RFC 9110 §14.1).
    let value = value.trim();
    let Some(spec) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &value[6..])
    else {
        return Range::Invalid;
    };
    if spec.contains(',') {
        return Range::Several;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Invalid;
    };
    let number = |s: &str| -> Option<usize> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(usize::MAX))
    };
    match (number(first), number(last), last.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (None, Some(n), _) if first.trim().is_empty() => {
            if n == 0 || len == 0 {
                Range::Unsatisfiable
            } else {
                Range::One(len.saturating_sub(n), len - 1)
            }
        }
        // bytes=a-
        (Some(a), None, true) => {
            if a >= len {
                Range::Unsatisfiable
            } else {
                Range::One(a, len - 1)
            }
        }
        // bytes=a-b
        (Some(a), Some(b), _) if a <= b => {
            if a >= len {
                Range::Unsatisfiable
            } else {
                Range::One(a, b.min(len - 1))
            }
        }
        _ => Range::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"abc\"";

    fn decide(pairs: &[(&str, &str)], len: usize) -> Answer {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Answer::decide(&headers, false, ETAG, len)
    }

    #[test]
    fn if_none_match() {
        assert_eq!(decide(&[], 10), Answer::Full);
        assert_eq!(
            decide(&[("if-none-match", "\"abc\"")], 10),
            Answer::NotModified
        );
        assert_eq!(
            decide(&[("if-none-match", "W/\"abc\"")], 10),
            Answer::NotModified
        );
        assert_eq!(
            decide(&[("if-none-match", "\"x\", \"abc\"")], 10),
            Answer::NotModified
        );
        assert_eq!(
            decide(
                &[("if-none-match", "\"x\""), ("if-none-match", "\"abc\"")],
                10
            ),
            Answer::NotModified
        );
        assert_eq!(decide(&[("if-none-match", "*")], 10), Answer::NotModified);
        assert_eq!(decide(&[("if-none-match", "\"abd\"")], 10), Answer::Full);
        // 304 wins over a range.
        assert_eq!(
            decide(&[("if-none-match", "\"abc\""), ("range", "bytes=0-1")], 10),
            Answer::NotModified
        );
    }

    #[test]
    fn ranges() {
        let r = |v: &str| decide(&[("range", v)], 10);
        assert_eq!(r("bytes=0-3"), Answer::Partial { start: 0, end: 3 });
        assert_eq!(r("bytes=4-"), Answer::Partial { start: 4, end: 9 });
        assert_eq!(r("bytes=-3"), Answer::Partial { start: 7, end: 9 });
        assert_eq!(r("bytes=-30"), Answer::Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=5-100"), Answer::Partial { start: 5, end: 9 });
        assert_eq!(r("bytes=10-"), Answer::Unsatisfiable);
        assert_eq!(r("bytes=10-12"), Answer::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Answer::Unsatisfiable);
        assert_eq!(r("bytes=0-1,3-4"), Answer::FullIgnoringRange);
        for invalid in [
            "bytes=3-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=1",
        ] {
            assert_eq!(r(invalid), Answer::FullIgnoringRange, "{invalid}");
        }
        assert_eq!(r("bytes=99999999999999999999999-"), Answer::Unsatisfiable);
        assert_eq!(r("Bytes=0-1"), Answer::Partial { start: 0, end: 1 });
        assert_eq!(r("bytes=0-0"), Answer::Partial { start: 0, end: 0 });
        assert_eq!(decide(&[("range", "bytes=0-1")], 0), Answer::Unsatisfiable);
        // HEAD ignores Range.
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RANGE, "bytes=0-1".parse().unwrap());
        assert_eq!(Answer::decide(&headers, true, ETAG, 10), Answer::Full);
    }

    #[test]
    fn if_range() {
        assert_eq!(
            decide(&[("range", "bytes=2-"), ("if-range", "\"abc\"")], 10),
            Answer::Partial { start: 2, end: 9 }
        );
        assert_eq!(
            decide(&[("range", "bytes=2-"), ("if-range", "\"old\"")], 10),
            Answer::FullIgnoringRange
        );
        assert_eq!(
            decide(&[("range", "bytes=2-"), ("if-range", "W/\"abc\"")], 10),
            Answer::FullIgnoringRange
        );
        assert_eq!(
            decide(
                &[
                    ("range", "bytes=2-"),
                    ("if-range", "Fri, 20 Nov 2026 10:00:00 GMT")
                ],
                10
            ),
            Answer::FullIgnoringRange
        );
    }
}
