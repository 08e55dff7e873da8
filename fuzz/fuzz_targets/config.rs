//! Configuration parsing and validation: `Config::parse(text, path)`.
//!
//! Input: the text of a configuration file. It is read as if it were `framecache.toml` in a
//! folder holding the development key files under the names the shipped file uses
//! (`dev/hub-token.secret`, `dev/admin.token`, `dev/frame-signing.key`), so a valid file is
//! within reach and validation runs to its end.
//!
//! Invariants: it never panics; a refused file has at least one problem, and every problem
//! names a key path (`server.listen`, `delivery.variants[2].name`, a quoted key for names that
//! are not bare TOML keys) or, for a syntax error, its line, and prints on one line (SPEC:
//! one line per problem).

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use framecache::config::Config;
use libfuzzer_sys::fuzz_target;

/// A folder with the key files, made once per process.
fn config_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join("framecache-fuzz-config");
        std::fs::create_dir_all(dir.join("dev")).expect("temporary folder");
        for (name, contents) in [
            (
                "hub-token.secret",
                "fuzz-only-hub-token-secret-0123456789abcdef\n",
            ),
            ("admin.token", "fuzz-only-admin-token\n"),
            ("frame-signing.key", &format!("{}\n", "5a".repeat(32))),
        ] {
            std::fs::write(dir.join("dev").join(name), contents).expect("key file");
        }
        dir.join("framecache.toml")
    })
}

/// Text naming a file that could block a read (a terminal, a pipe, standard input) or that
/// hides such a name behind an escape: left out, so a run reads only ordinary files.
fn could_block(text: &str) -> bool {
    ["/dev", "/proc", "/sys", "/run", "\\u", "\\U"]
        .iter()
        .any(|p| text.contains(p))
}

/// `(line N)` or `(syntax)`, where TOML itself failed.
fn is_location(key: &str) -> bool {
    key == "(syntax)"
        || key
            .strip_prefix("(line ")
            .and_then(|k| k.strip_suffix(')'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `segment(.segment)*`, each segment a bare TOML key or a quoted one, with `[i]` indexes.
fn is_key_path(key: &str) -> bool {
    let mut rest = key.as_bytes();
    loop {
        let name_len = if rest.first() == Some(&b'"') {
            // A quoted key: escapes (`\"`, `\\`, `\n`, `\u{…}`) and no control characters.
            let mut at = 1;
            loop {
                match rest.get(at) {
                    None => return false,
                    Some(b'"') => break at + 1,
                    Some(b'\\') => at += 2,
                    Some(b) if b.is_ascii_control() => return false,
                    Some(_) => at += 1,
                }
            }
        } else {
            rest.iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                .count()
        };
        if name_len == 0 {
            return false;
        }
        rest = &rest[name_len..];
        while let Some(index) = rest.strip_prefix(b"[") {
            let digits = index.iter().take_while(|b| b.is_ascii_digit()).count();
            match index.get(digits) {
                Some(b']') if digits > 0 => rest = &index[digits + 1..],
                _ => return false,
            }
        }
        match rest.split_first() {
            None => return true,
            Some((b'.', after)) => rest = after,
            Some(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if could_block(text) {
        return;
    }
    let path = config_path();
    match Config::parse(text, path) {
        Ok(config) => {
            assert!(!config.origin.addresses.is_empty());
            assert!(config.server.threads >= 1);
            let two_frames = 2 * config.origin.max_frame_bytes as u64;
            assert!(config.cache.max_bytes >= two_frames);
            assert!(config.delivery.renditions.find("full").is_some());
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "refused without a problem");
            for problem in &error.problems {
                let key = &problem.key;
                assert!(
                    is_location(key) || is_key_path(key),
                    "no key path: {problem:?}"
                );
                assert!(!problem.message.is_empty(), "{problem:?}");
                let line = problem.to_string();
                assert!(!line.contains(['\n', '\r']), "more than one line: {line:?}");
            }
        }
    }
});
