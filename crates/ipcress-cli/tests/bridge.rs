//! `ipcress bridge out` and `ipcress bridge in` as real processes through a
//! real nats-server on a loopback port.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn nats_server() -> Option<PathBuf> {
    if let Some(p) = ipcress_nats::server::find() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("nats-server is not installed (apt-get install -y nats-server)");
    }
    eprintln!("note: nats-server not installed; skipping");
    None
}

/// The body of GET `path` on a loopback port, which must answer 200.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{r}");
    body.to_string()
}

#[test]
fn bridge_out_and_in_carry_every_record() {
    let Some(bin) = nats_server() else { return };
    let _w = Watchdog::new(
        "bridge_out_and_in_carry_every_record",
        Duration::from_secs(180),
    );
    let a = Root::new("bridge-a");
    let b = Root::new("bridge-b");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = a.path().join("js");
    let mut server = ipcress_nats::server::command(&bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("nats://127.0.0.1:{port}");
    a.ok(&["create", "src", "--ring", "4M"]);
    b.ok(&["create", "dst", "--ring", "4M"]);
    let lines: Vec<String> = (0..5000)
        .map(|i| format!("record {i} {}", "x".repeat(i % 200)))
        .collect();
    let input = lines.join("\n") + "\n";
    a.ok_in(&["put", "src", "--lines"], input.as_bytes());
    let mut out = Bg::spawn({
        let mut c = a.cmd(&[
            "bridge",
            "out",
            "--stream",
            "src",
            "--nats",
            &url,
            "--subject",
            "ipc.src",
            "--create-stream",
            "SRC",
            "--metrics",
            "127.0.0.1:0",
        ]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    });
    // `--metrics ADDR` says where it serves, as `stat --listen` does.
    let metrics_port: u16 = {
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(out.child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        first
            .trim()
            .strip_suffix("/metrics")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
    };
    let mut inn = Bg::spawn({
        let mut c = b.cmd(&[
            "bridge",
            "in",
            "--nats",
            &url,
            "--js-stream",
            "SRC",
            "--durable",
            "d1",
            "--stream",
            "dst",
        ]);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    });
    let got = b.ok(&["get", "dst", "--count", "5000", "--lines"]);
    assert_eq!(String::from_utf8(got).unwrap(), input);
    // `stat` shows the bridge: its counters and its consumer's lag.
    let t0 = Instant::now();
    loop {
        let st = a.stat("src");
        let records = st["bridges"]
            .as_array()
            .and_then(|b| b.first())
            .map(|b| b["records"].as_u64().unwrap());
        let lag = st["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with("bridge-out-"))
            .map(|c| c["lag_bytes"].as_u64().unwrap());
        if records == Some(5000) && lag == Some(0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "stat: records {records:?}, lag {lag:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Issue 16: the bridge serves its counters over HTTP (`--metrics`).
    let body = http_get(metrics_port, "/metrics");
    assert!(
        body.contains(
            "ipcress_bridge_records_total{stream=\"src\",bridge=\"bridge-out-ipc.src\"} 5000\n"
        ),
        "{body}"
    );
    assert!(
        body.contains("ipcress_messages_total{stream=\"src\"} 5000\n"),
        "{body}"
    );
    out.signal(rustix::process::Signal::TERM);
    inn.signal(rustix::process::Signal::TERM);
    assert!(
        out.wait(Duration::from_secs(30)).success(),
        "{}",
        out.stderr()
    );
    assert!(
        inn.wait(Duration::from_secs(30)).success(),
        "{}",
        inn.stderr()
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// `bridge out` of a new stream `s` under `root` to a loopback port nobody
/// listens on, with the default log filter.
fn bridge_out_to_nowhere(root: &Root) -> std::process::Command {
    root.ok(&["create", "s", "--ring", "64K"]);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut cmd = root.cmd(&[
        "bridge",
        "out",
        "--stream",
        "s",
        "--nats",
        &url,
        "--subject",
        "x",
    ]);
    cmd.env_remove("RUST_LOG").env_remove("IPCRESS_LOG");
    cmd
}

/// `ipcress bridge out ... 2>&1 | head -3`: once the reader of stderr is
/// gone, log lines are dropped and the bridge goes on (it used to abort,
/// status 134: the logger reported its own write failure with `eprintln!`,
/// which panicked, and so did the panic hook).
#[test]
fn a_closed_stderr_does_not_abort_the_bridge() {
    let _w = Watchdog::new(
        "a_closed_stderr_does_not_abort_the_bridge",
        Duration::from_secs(60),
    );
    let root = Root::new("bridge-stderr");
    let mut cmd = bridge_out_to_nowhere(&root);
    // Debug logs: a line at every connection attempt.
    cmd.env("IPCRESS_LOG", "debug");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut bridge = Bg::spawn(cmd);
    // Read the first line, then close the pipe as `head -1` would.
    let mut err = std::io::BufReader::new(bridge.child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    assert!(first.starts_with("ipcress: "), "{first:?}");
    drop(err);
    // Retries (100 ms, doubling) keep logging into the closed pipe.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        bridge.child.try_wait().unwrap().is_none(),
        "the bridge ended when its stderr closed: {:?}",
        bridge.child.try_wait()
    );
    bridge.signal(rustix::process::Signal::TERM);
    let st = bridge.wait(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0), "{st:?}");
}

/// Issue 16: `bridge out` to a server that is not there says so on stderr
/// within seconds, once (not once per retry), and still ends cleanly on
/// SIGTERM. (It used to retry without a word: nothing printed the
/// bridge's log.)
#[test]
fn a_bridge_that_cannot_reach_its_server_says_so() {
    let _w = Watchdog::new(
        "a_bridge_that_cannot_reach_its_server_says_so",
        Duration::from_secs(60),
    );
    let root = Root::new("bridge-nowhere");
    let mut cmd = bridge_out_to_nowhere(&root);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut bridge = Bg::spawn(cmd);
    // Several retries happen in these three seconds (100 ms, doubling).
    std::thread::sleep(Duration::from_secs(3));
    bridge.signal(rustix::process::Signal::TERM);
    let st = bridge.wait(Duration::from_secs(20));
    let err = bridge.stderr();
    assert_eq!(st.code(), Some(0), "{err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("cannot connect"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("ipcress: warning: bridge out: cannot connect to nats://127.0.0.1:"),
        "{err}"
    );
}
