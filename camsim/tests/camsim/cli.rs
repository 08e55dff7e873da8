//! The `camsim` binary: usage errors exit 64 with one line; Ctrl-C shuts it down cleanly.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::client::PATIENCE;

const BIN: &str = env!("CARGO_BIN_EXE_camsim");

/// A scratch file holding `text`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, text: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("camsim-test-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write scratch file");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BIN).args(args).output().expect("run camsim");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn usage_problems_exit_64_with_one_line_each() {
    let (code, stderr) = run(&["--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(64));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--signing-key-file"), "{stderr}");

    let (code, stderr) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--signing-key-file",
        "/nonexistent/key",
    ]);
    assert_eq!(code, Some(64));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let short_key = Scratch::new("short.key", "abcd\n");
    let key_path = short_key.0.to_str().unwrap();
    let (code, stderr) = run(&["--listen", "127.0.0.1:0", "--signing-key-file", key_path]);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("64 hex chars"), "{stderr}");

    let (code, stderr) = run(&["--listen", "nowhere", "--signing-key-file", key_path]);
    assert_eq!(code, Some(64));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (code, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
}

#[cfg(unix)]
#[test]
fn ctrl_c_shuts_down_cleanly() {
    let key = Scratch::new("good.key", &format!("{}\n", "00".repeat(32)));
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--signing-key-file",
            key.0.to_str().unwrap(),
        ])
        .args(["--owners", "2", "--cameras-per-owner", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start camsim");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the listen line");
    assert!(
        first.starts_with("camsim listening on http://127.0.0.1:"),
        "{first}"
    );
    let mut rest = String::new();
    stdout.read_line(&mut rest).expect("read the topology");
    assert_eq!(rest.trim(), "owner-1: cam-1, cam-2");

    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(interrupted.success());
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for camsim") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "camsim did not stop");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .ok();
    assert_eq!(status.code(), Some(0), "{stderr}");
}
