//! `ipcress top` in a real terminal (tmux): it shows the streams and quits
//! on `q`. In CI (CI=true) a missing tmux fails the test.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", socket, "-f", "/dev/null"])
        .args(args)
        .output()
        .expect("run tmux")
}

#[test]
fn top_shows_streams_and_quits_on_q() {
    let _w = Watchdog::new("top_shows_streams_and_quits_on_q", Duration::from_secs(120));
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is required in CI (apt-get install tmux)"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let root = Root::new("top");
    root.ok(&["create", "watched-stream", "--ring", "64K"]);
    root.ok_in(&["put", "watched-stream"], b"a\nb\n");
    let socket = format!("ipcress-test-{}", std::process::id());
    let cmd = format!("env IPCRESS_DIR='{}' '{}' top", root.path().display(), BIN);
    let o = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "120",
            "-y",
            "30",
            &cmd,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cleanup = KillServer(socket.clone());
    let t0 = Instant::now();
    let screen = loop {
        let o = tmux(&socket, &["capture-pane", "-p", "-t", "top"]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        if s.contains("watched-stream") && s.contains("ipcress top") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "top never showed the stream:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(screen.contains("TAIL"), "{screen}");
    tmux(&socket, &["send-keys", "-t", "top", "q"]);
    let t0 = Instant::now();
    while tmux(&socket, &["has-session", "-t", "top"])
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "top did not quit on q"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(cleanup);
}

struct KillServer(String);

impl Drop for KillServer {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
}

/// Issue 16: `top --once` and `top --batch -n N` print the table as text
/// with no terminal at all (stdout a pipe), with the stream's row and the
/// rate of records that arrived during the interval. (`top` used to fail
/// without a terminal.)
#[test]
fn top_prints_text_without_a_terminal() {
    let root = Root::new("topbatch");
    root.ok(&["create", "logs", "--ring", "1M"]);
    root.ok_in(&["put", "logs"], b"a\nb\nc\n");
    let once = String::from_utf8(root.ok(&["top", "--once", "--interval", "100"])).unwrap();
    let lines: Vec<&str> = once.lines().collect();
    assert_eq!(lines.len(), 3, "{once}");
    assert!(
        lines[0].starts_with("ipcress top") && lines[0].ends_with("1 streams"),
        "{once}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header[..4], ["STREAM", "LAYOUT", "SIZE", "TAIL"], "{once}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[..2], ["logs", "ring"], "{once}");
    let tail = root.stat("logs")["tail"].as_u64().unwrap();
    assert!(lines[2].contains(&format!("  {tail}  ")), "{once}");
    let batch =
        String::from_utf8(root.ok(&["top", "--batch", "-n", "2", "--interval", "50"])).unwrap();
    assert_eq!(batch.matches("ipcress top").count(), 2, "{batch}");
    assert_eq!(
        batch.lines().filter(|l| l.starts_with("logs ")).count(),
        2,
        "{batch}"
    );
}
