//! `ipcress exec` stages written in other languages, and `ipcress demo`.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(240);

fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(b)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn exec_awk_with_two_workers_delivers_every_record_once() {
    let _w = Watchdog::new("exec_awk_two_workers", LIMIT);
    let root = Root::new("exec-awk");
    root.ok(&["create", "in", "--ring", "256K"]);
    root.ok(&["create", "out", "--ring", "256K"]);
    let n = 20_000;
    let input: String = (0..n)
        .map(|i| format!("record {i} of the input\n"))
        .collect();
    // The input is larger than the ring: the stage runs while it is written.
    let mut stage = Bg::spawn(root.cmd(&[
        "exec",
        "--in",
        "in",
        "--out",
        "out",
        "--workers",
        "2",
        "--count",
        &n.to_string(),
        "--",
        "awk",
        "{ print toupper($0) }",
    ]));
    let mut reader = Bg::spawn({
        let mut c = root.cmd(&["get", "out", "--count", &n.to_string()]);
        c.stdout(std::process::Stdio::piped());
        c
    });
    root.await_consumers("in", 2);
    root.await_consumers("out", 1);
    // Drain the reader as it goes, or it would hold the whole pipeline back.
    let mut stdout = reader.child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
        out
    });
    root.ok_in(&["put", "in"], input.as_bytes());
    assert!(stage.wait(LIMIT).success());
    let out = drain.join().unwrap();
    assert!(reader.wait(LIMIT).success());
    let expected = sorted_lines(input.to_uppercase().as_bytes());
    let got = sorted_lines(&out);
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the output is not the input, each record once"
    );
    // The group is named after the output and has read everything.
    let st = root.stat("in");
    let g = st["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "group")
        .unwrap()
        .clone();
    assert_eq!(g["name"], "exec-out");
    assert_eq!(g["lag_bytes"], 0);
}

#[test]
fn exec_python_or_sh_stage_until_idle() {
    let _w = Watchdog::new("exec_python_or_sh_stage_until_idle", LIMIT);
    let root = Root::new("exec-py");
    root.ok(&["create", "in", "--ring", "1M"]);
    root.ok(&["create", "out", "--ring", "1M"]);
    let input: String = (0..2000).map(|i| format!("{i},{}\n", i * i)).collect();
    root.ok_in(&["put", "in"], input.as_bytes());
    let has_python = std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success());
    let prog: Vec<&str> = if has_python {
        vec![
            "python3",
            "-c",
            "import sys\nfor l in sys.stdin:\n    a, b = l.rstrip('\\n').split(',')\n    print(f'{b}:{a}')",
        ]
    } else {
        vec![
            "sh",
            "-c",
            "while IFS=, read -r a b; do echo \"$b:$a\"; done",
        ]
    };
    let mut args = vec![
        "exec",
        "--in",
        "in",
        "--out",
        "out",
        "--workers",
        "2",
        "--group",
        "py",
        "--until-idle",
        "1",
        "--",
    ];
    args.extend(prog);
    root.ok(&args);
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..2000).map(|i| format!("{}:{i}", i * i)).collect();
        v.sort();
        v
    };
    assert_eq!(sorted_lines(&root.ok(&["get", "out"])), expected);
}

#[test]
fn exec_length_prefixed_binary_records_and_failures() {
    let _w = Watchdog::new("exec_length_prefixed", LIMIT);
    let root = Root::new("exec-lp");
    root.ok(&["create", "in", "--ring", "1M"]);
    root.ok(&["create", "out", "--ring", "1M"]);
    let records: Vec<Vec<u8>> = (0..500u32)
        .map(|i| (0..(i % 97)).map(|j| (i * 31 + j) as u8).collect())
        .collect();
    root.ok_in(
        &["put", "in", "--length-prefixed"],
        &length_prefixed(&records),
    );
    root.ok(&[
        "exec",
        "--in",
        "in",
        "--out",
        "out",
        "--length-prefixed",
        "--count",
        "500",
        "--",
        "cat",
    ]);
    // One worker: order kept, bytes exact.
    assert_eq!(
        root.ok(&["get", "out", "--length-prefixed"]),
        length_prefixed(&records)
    );
    // A failing stage gives its exit code and one line.
    root.ok(&["create", "in2", "--ring", "64K"]);
    root.ok_in(&["put", "in2"], b"a\nb\n");
    let o = root.run(&[
        "exec",
        "--in",
        "in2",
        "--out",
        "out",
        "--until-idle",
        "0.5",
        "--",
        "sh",
        "-c",
        "cat >/dev/null; exit 3",
    ]);
    assert_eq!(o.code(), 3, "{}", o.stderr);
    assert_eq!(o.stderr, "ipcress: worker 0: sh exited with status 3\n");
}

#[test]
fn demo_runs_and_reports() {
    let _w = Watchdog::new("demo_runs_and_reports", LIMIT);
    let o = run(
        {
            let mut c = std::process::Command::new(BIN);
            c.args(["demo", "--lines", "3000", "--rate", "20000"]);
            c
        },
        None,
        Duration::from_secs(180),
    );
    let out = o.stdout_str();
    assert!(o.status.success(), "{out}\n{}", o.stderr);
    assert!(
        out.contains("check: every CRITICAL line reached alerts exactly once: OK"),
        "{out}"
    );
    assert!(out.contains("latency gen → alerts"), "{out}");
    assert!(out.contains("throughput:"), "{out}");
    for stream in ["logs", "parsed", "alerts"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(stream)),
            "{out}"
        );
    }
    let logs_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("logs "))
        .unwrap();
    assert_eq!(logs_line.split_whitespace().nth(1), Some("3000"), "{out}");
    // The temporary root is gone.
    let dir = out
        .lines()
        .next()
        .and_then(|l| l.rsplit_once(" on "))
        .map(|(_, d)| d.trim().to_string())
        .unwrap();
    assert!(dir.contains("ipcress-demo-"), "{dir}");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} was left behind"
    );
}
