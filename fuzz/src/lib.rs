//! What the fuzz targets share: their inputs are written like HTTP heads, `name: value` lines up
//! to an empty line and a body after it, so the seed corpora are real examples a person can read
//! and edit, and libFuzzer's mutations stay close to what a peer could send.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// The head lines of `data` (up to the first empty line, each without its `\r\n` or `\n`) and
/// the body after them.
pub fn head_and_body(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut lines = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    (lines, rest)
}

/// The headers of `name: value` lines, in order (a name may repeat). A line that is not a
/// valid header name and value is left out, as a server's parser would refuse it.
pub fn headers<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// The first value of `name` as trimmed text, as the proxy reads single-valued headers.
pub fn first<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_split_at_the_empty_line() {
        let (lines, body) = head_and_body(b"a: 1\r\nb: 2\n\r\nbody\n\nmore");
        assert_eq!(lines, [b"a: 1".as_slice(), b"b: 2"]);
        assert_eq!(body, b"body\n\nmore");
        let map = headers(lines);
        assert_eq!(first(&map, "b"), Some("2"));
        assert_eq!(head_and_body(b"x").1, b"");
    }
}
