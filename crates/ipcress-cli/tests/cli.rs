//! The `ipcress` binary: admin commands, put/get framings, stat output and
//! every error case, each test on its own temporary root.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn lines_round_trip_exactly() {
    let _w = Watchdog::new("lines_round_trip_exactly", LIMIT);
    let root = Root::new("lines");
    // Large enough to keep everything: no reader runs while we write.
    root.ok(&["create", "s", "--ring", "1M"]);
    let input = "first\n\n\nwith spaces  and\ttabs\ncarriage\r\nunicode ✓ ünïcödé\n\nlast\n";
    root.ok_in(&["put", "s"], input.as_bytes());
    assert_eq!(root.ok(&["get", "s"]), input.as_bytes());
    assert_eq!(root.ok(&["get", "s", "--lines"]), input.as_bytes());
    // A line longer than one frame goes through the streaming writer.
    let long = "x".repeat(100_000);
    root.ok_in(
        &["put", "s", "--lines"],
        format!("{long}\nafter").as_bytes(),
    );
    let out = root.ok(&["get", "s", "--from", "start"]);
    // The last line had no newline: it comes back with one.
    assert_same(&out, format!("{input}{long}\nafter\n").as_bytes());
    // Files, and '-' for stdin, in order.
    let f = root.path().join("a.txt");
    std::fs::write(&f, "from file 1\nfrom file 2\n").unwrap();
    root.ok(&["create", "t", "--ring", "64K"]);
    root.ok_in(&["put", "t", f.to_str().unwrap(), "-"], b"from stdin\n");
    assert_eq!(
        root.ok(&["get", "t"]),
        b"from file 1\nfrom file 2\nfrom stdin\n"
    );
}

#[test]
fn length_prefixed_round_trip_with_binary_and_large_records() {
    let _w = Watchdog::new("length_prefixed_round_trip", LIMIT);
    let root = Root::new("lp");
    root.ok(&["create", "s", "--ring", "64K"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut records: Vec<Vec<u8>> = vec![vec![], b"\n\n\0\r".to_vec(), vec![0u8; 3]];
    for i in 0..300 {
        let len = if i % 50 == 0 {
            40_000
        } else {
            rng.random_range(0..600)
        };
        records.push((0..len).map(|_| rng.random()).collect());
    }
    let input = length_prefixed(&records);
    // The ring is smaller than the data: a reader must run alongside.
    let mut get = Bg::spawn({
        let mut c = root.cmd(&[
            "get",
            "s",
            "--length-prefixed",
            "--count",
            &records.len().to_string(),
        ]);
        c.stdout(Stdio::piped());
        c
    });
    // Drain get as it goes: a full pipe would hold the producer back.
    let mut stdout = get.child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    root.await_consumers("s", 1);
    root.ok_in(&["put", "s", "--length-prefixed"], &input);
    let out = drain.join().unwrap();
    assert!(get.wait(LIMIT).success());
    assert_eq!(out.len(), input.len());
    assert!(out == input, "length-prefixed records differ");

    // Whole: one record per file, raw bytes back.
    root.ok(&["create", "w", "--ring", "64K"]);
    let f1 = root.path().join("one.bin");
    let f2 = root.path().join("two.bin");
    std::fs::write(&f1, &records[10]).unwrap();
    std::fs::write(&f2, b"").unwrap();
    root.ok(&[
        "put",
        "w",
        "--whole",
        f1.to_str().unwrap(),
        f2.to_str().unwrap(),
    ]);
    assert_eq!(root.stat("w")["messages_written"], 2);
    assert_eq!(root.ok(&["get", "w", "--whole"]), records[10]);
    let lp = root.ok(&["get", "w", "--length-prefixed"]);
    assert_eq!(lp, length_prefixed(&[records[10].clone(), vec![]]));
}

#[test]
fn truncated_length_prefixed_input_is_an_error() {
    let root = Root::new("trunc");
    root.ok(&["create", "s", "--ring", "64K"]);
    let o = root.run_in(&["put", "s", "--length-prefixed"], &[10, 0, 0, 0, 1, 2]);
    assert_eq!(o.code(), 1);
    assert_eq!(
        o.stderr,
        "ipcress: standard input: input ends inside a length-prefixed record of 10 bytes\n"
    );
}

#[test]
fn get_count_waits_and_follow_ends_cleanly() {
    let _w = Watchdog::new("get_count_waits_and_follow_ends_cleanly", LIMIT);
    let root = Root::new("follow");
    root.ok(&["create", "s", "--ring", "64K"]);
    root.ok_in(&["put", "s"], b"1\n2\n3\n4\n");
    assert_eq!(root.ok(&["get", "s", "--count", "3"]), b"1\n2\n3\n");
    // Without -f or --count, get stops at the tail it saw at start.
    assert_eq!(root.ok(&["get", "s", "--from", "end"]), b"");

    // --count waits for records not yet written.
    let mut waiting = Bg::spawn({
        let mut c = root.cmd(&["get", "s", "--count", "6"]);
        c.stdout(Stdio::piped());
        c
    });
    root.await_consumers("s", 1);
    root.ok_in(&["put", "s"], b"5\n6\n7\n");
    let mut out = String::new();
    waiting
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(waiting.wait(LIMIT).success());
    assert_eq!(out, "1\n2\n3\n4\n5\n6\n");

    // `get -f | head -1`: the reader goes away, get ends with 0, whether it
    // notices on a write (EPIPE) or while idle.
    for extra in [false, true] {
        let mut f = Bg::spawn({
            let mut c = root.cmd(&["get", "s", "-f"]);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c
        });
        let mut r = BufReader::new(f.child.stdout.take().unwrap());
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        assert_eq!(first, "1\n");
        drop(r);
        if extra {
            root.ok_in(&["put", "s"], b"more\n");
        }
        let st = f.wait(LIMIT);
        assert!(
            st.success(),
            "get -f after its reader left: {st} {}",
            f.stderr()
        );
        assert_eq!(f.stderr(), "");
    }

    // SIGINT and SIGTERM end -f with 0 and the durable position committed.
    for sig in [Signal::INT, Signal::TERM] {
        let name = format!("c{}", sig.as_raw());
        let mut f = Bg::spawn({
            let mut c = root.cmd(&["get", "s", "-f", "--consumer", &name]);
            c.stdout(Stdio::piped());
            c
        });
        let mut r = BufReader::new(f.child.stdout.take().unwrap());
        let mut line = String::new();
        for _ in 0..8 {
            line.clear();
            r.read_line(&mut line).unwrap();
        }
        assert_eq!(line, "more\n");
        f.signal(sig);
        assert!(f.wait(LIMIT).success());
        let st = root.stat("s");
        let c = st["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap()
            .clone();
        assert_eq!(c["kind"], "durable");
        assert_eq!(c["position"], st["tail"]);
        assert_eq!(c["lag_bytes"], 0);
    }
    // The durable consumer goes on where it stopped.
    root.ok_in(&["put", "s"], b"next\n");
    assert_eq!(root.ok(&["get", "s", "--consumer", "c2"]), b"next\n");
    assert_eq!(root.ok(&["get", "s", "--consumer", "c2"]), b"");
}

#[test]
fn stat_json_and_prometheus_match_known_traffic() {
    let _w = Watchdog::new("stat_json_and_prometheus", LIMIT);
    let root = Root::new("stat");
    root.ok(&["create", "s", "--ring", "1M"]);
    let records: Vec<Vec<u8>> = (0..100)
        .map(|i| vec![b'a' + (i % 26) as u8; i * 3])
        .collect();
    root.ok_in(
        &["put", "s", "--length-prefixed"],
        &length_prefixed(&records),
    );
    let out = root.ok(&[
        "get",
        "s",
        "--consumer",
        "reader",
        "--count",
        "40",
        "--length-prefixed",
    ]);
    assert_eq!(out, length_prefixed(&records[..40]));

    let tail: u64 = records.iter().map(|r| frame_len(r.len())).sum();
    let pos: u64 = records[..40].iter().map(|r| frame_len(r.len())).sum();
    let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
    let st = root.stat("s");
    assert_eq!(st["name"], "s");
    assert_eq!(st["id"].as_str().unwrap().len(), 32);
    assert_eq!(st["layout"], "ring");
    assert_eq!(st["policy"], "block");
    assert_eq!(st["checksum"], "crc32c");
    assert_eq!(st["compression"], "none");
    assert_eq!(st["encrypted"], false);
    assert_eq!(st["capacity_bytes"], 1 << 20);
    assert_eq!(st["segment_bytes"], 1 << 18);
    assert_eq!(st["segments"], 4);
    assert_eq!(st["head"], 0);
    assert_eq!(st["tail"], tail);
    assert_eq!(st["bytes_written"], bytes);
    assert_eq!(st["messages_written"], 100);
    assert_eq!(st["live_producers"], 0);
    assert_eq!(st["bytes_per_sec"], 0.0);
    assert_eq!(st["messages_per_sec"], 0.0);
    assert_eq!(st["interval_ms"], 0);
    let cs = st["consumers"].as_array().unwrap();
    assert_eq!(cs.len(), 1, "{st}");
    let c = &cs[0];
    assert_eq!(c["name"], "reader");
    assert_eq!(c["kind"], "durable");
    assert_eq!(c["position"], pos);
    assert_eq!(c["lag_bytes"], tail - pos);
    assert_eq!(c["lag_records"], 60);
    let secs = c["lag_seconds"]
        .as_f64()
        .expect("a format-4 stream has times");
    assert!(secs >= 0.0, "{c}");
    assert_eq!(st["format_version"], 4);
    assert_eq!(c["alive"], false);
    assert_eq!(c["messages"], 40);
    assert!(c["slot"].is_u64() && c["pid"].is_u64() && c["heartbeat_ms"].is_u64());

    // With sampling, the interval is reported (rates depend on timing).
    let sampled: serde_json::Value =
        serde_json::from_slice(&root.ok(&["stat", "s", "--json", "--interval", "50"])).unwrap();
    assert!(sampled["interval_ms"].as_u64().unwrap() >= 50);
    assert_eq!(sampled["bytes_per_sec"], 0.0);
    // Without a name: an array of every stream. Without `--interval`,
    // JSON is the state now, not sampled (issue 16: no second of waiting).
    let all: serde_json::Value = serde_json::from_slice(&root.ok(&["stat", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["interval_ms"], 0, "{all}");

    let prom = String::from_utf8(root.ok(&["stat", "s", "--prometheus"])).unwrap();
    let lines: Vec<&str> = prom.lines().collect();
    for expected in [
        format!("ipcress_tail_bytes{{stream=\"s\"}} {tail}"),
        "ipcress_head_bytes{stream=\"s\"} 0".to_string(),
        "ipcress_capacity_bytes{stream=\"s\"} 1048576".to_string(),
        "ipcress_messages_total{stream=\"s\"} 100".to_string(),
        format!("ipcress_bytes_total{{stream=\"s\"}} {bytes}"),
        "ipcress_producers{stream=\"s\"} 0".to_string(),
        format!(
            "ipcress_consumer_position_bytes{{stream=\"s\",consumer=\"reader\",kind=\"durable\"}} {pos}"
        ),
        format!(
            "ipcress_consumer_lag_bytes{{stream=\"s\",consumer=\"reader\",kind=\"durable\"}} {}",
            tail - pos
        ),
        "ipcress_consumer_alive{stream=\"s\",consumer=\"reader\",kind=\"durable\"} 0".to_string(),
        "ipcress_consumer_lag_records{stream=\"s\",consumer=\"reader\",kind=\"durable\"} 60"
            .to_string(),
        "ipcress_consumer_messages_total{stream=\"s\",consumer=\"reader\",kind=\"durable\"} 40"
            .to_string(),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "missing {expected:?} in\n{prom}"
        );
    }
    for (metric, kind) in [
        ("ipcress_tail_bytes", "gauge"),
        ("ipcress_head_bytes", "gauge"),
        // OpenMetrics names a counter family without its `_total` suffix.
        ("ipcress_messages", "counter"),
        ("ipcress_consumer_lag_bytes", "gauge"),
        ("ipcress_consumer_alive", "gauge"),
    ] {
        assert!(
            lines.contains(&format!("# TYPE {metric} {kind}").as_str()),
            "{metric}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("# HELP {metric} "))),
            "{metric}"
        );
    }
    // Every sample line is `name{labels} value`.
    for l in lines.iter().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        v.parse::<f64>().unwrap();
    }
    // The table names the consumer.
    let table = String::from_utf8(root.ok(&["stat", "s", "--interval", "0"])).unwrap();
    assert!(
        table.contains("reader") && table.contains("durable"),
        "{table}"
    );
}

#[test]
fn create_options_ls_and_rm() {
    let root = Root::new("admin");
    root.ok(&[
        "create",
        "r",
        "--ring",
        "256K",
        "--segments",
        "8",
        "--policy",
        "overwrite",
        "--checksum",
        "none",
        "--compress",
        "zstd:3",
        "--mode",
        "0660",
    ]);
    root.ok(&[
        "create",
        "l",
        "--log",
        "--segment",
        "64KiB",
        "--retain",
        "10m",
        "--retain",
        "1G",
    ]);
    root.ok(&["create", "d"]);
    let r = root.stat("r");
    assert_eq!(r["segments"], 8);
    assert_eq!(r["segment_bytes"], 32 << 10);
    assert_eq!(r["policy"], "overwrite");
    assert_eq!(r["checksum"], "none");
    assert_eq!(r["compression"], "zstd:3");
    let mode = std::fs::metadata(root.path().join("r/meta"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let l = root.stat("l");
    assert_eq!(l["layout"], "log");
    assert_eq!(l["capacity_bytes"], serde_json::Value::Null);
    assert_eq!(l["segment_bytes"], 64 << 10);
    assert_eq!(root.stat("d")["capacity_bytes"], 64 << 20);
    // Compressed round trip.
    root.ok_in(
        &["put", "r"],
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nb\n",
    );
    assert_eq!(
        root.ok(&["get", "r"]),
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nb\n"
    );

    let ls = String::from_utf8(root.ok(&["ls"])).unwrap();
    let names: Vec<&str> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["d", "l", "r"]);
    let json: serde_json::Value = serde_json::from_slice(&root.ok(&["ls", "--json"])).unwrap();
    assert_eq!(json[2]["name"], "r");
    assert_eq!(json[2]["capacity_bytes"], 256 << 10);

    root.ok(&["get", "r", "--consumer", "c"]);
    assert_eq!(root.stat("r")["consumers"].as_array().unwrap().len(), 1);
    root.ok(&["rm", "r", "--consumer", "c"]);
    assert_eq!(root.stat("r")["consumers"].as_array().unwrap().len(), 0);
    root.ok(&["rm", "r"]);
    root.ok(&["rm", "l"]);
    assert_eq!(
        String::from_utf8(root.ok(&["ls"])).unwrap().lines().count(),
        2
    );
    // The global --dir wins over IPCRESS_DIR.
    let other = Root::new("admin-other");
    root.ok(&["--dir", other.path().to_str().unwrap(), "create", "x"]);
    assert!(other.path().join("x/meta").exists());
    assert!(!root.path().join("x").exists());
}

#[test]
fn keygen_and_encrypted_streams() {
    let root = Root::new("keys");
    let key = root.path().join("k.key");
    let fp = String::from_utf8(root.ok(&["keygen", key.to_str().unwrap()])).unwrap();
    assert_eq!(fp.trim().len(), 8);
    assert!(fp.trim().chars().all(|c| c.is_ascii_hexdigit()));
    let raw = std::fs::read(&key).unwrap();
    assert!(!fp.contains(&raw.iter().map(|b| format!("{b:02x}")).collect::<String>()[..8]));
    let k = key.to_str().unwrap();
    root.ok(&["create", "e", "--ring", "64K", "--encrypt-key", k]);
    assert_eq!(root.stat("e")["encrypted"], true);
    root.ok_in(&["put", "e", "--key", k], b"secret 1\nsecret 2\n");
    assert_eq!(root.ok(&["get", "e", "--key", k]), b"secret 1\nsecret 2\n");
    // The environment variable does the same.
    let mut c = root.cmd(&["get", "e"]);
    c.env("IPCRESS_KEY_FILE", &key);
    let o = run(c, None, LIMIT);
    o.assert_ok(&["get", "e"]);
    assert_eq!(o.stdout, b"secret 1\nsecret 2\n");
    // The plaintext is nowhere in the stream's files.
    let data = std::fs::read(root.path().join("e/data")).unwrap();
    assert!(!data.windows(6).any(|w| w == b"secret"));
}

/// Compare large byte strings without printing them whole.
fn assert_same(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
        panic!(
            "outputs differ: {} bytes, expected {}; first difference at byte {at}",
            got.len(),
            want.len()
        );
    }
}

/// Run and expect one line on stderr, exactly `msg`, and exit `code`.
fn expect_error(root: &Root, args: &[&str], code: i32, msg: &str) {
    let o = root.run(args);
    assert_eq!(o.code(), code, "ipcress {args:?}: {}", o.stderr);
    assert_eq!(o.stderr, format!("{msg}\n"), "ipcress {args:?}");
}

/// Like expect_error, for messages whose tail may change: a prefix.
fn expect_error_prefix(root: &Root, args: &[&str], code: i32, prefix: &str) {
    let o = root.run(args);
    assert_eq!(o.code(), code, "ipcress {args:?}: {}", o.stderr);
    assert!(
        o.stderr.starts_with(prefix),
        "ipcress {args:?}: {}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
    assert!(o.stderr.ends_with('\n'));
}

fn patch(path: &std::path::Path, offset: usize, bytes: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    b[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, b).unwrap();
}

#[test]
fn errors_are_one_line_with_exit_codes() {
    let _w = Watchdog::new("errors_are_one_line_with_exit_codes", LIMIT);
    let root = Root::new("errors");
    // Unknown stream.
    expect_error(&root, &["get", "nope"], 1, "ipcress: no such stream: nope");
    expect_error(&root, &["stat", "nope"], 1, "ipcress: no such stream: nope");
    expect_error(&root, &["rm", "nope"], 1, "ipcress: no such stream: nope");
    // Bad name: a usage error.
    expect_error(
        &root,
        &["create", "a/b"],
        2,
        "ipcress: invalid value 'a/b' for '<NAME>': invalid name \"a/b\": only letters, \
         digits, '.', '_' and '-' are allowed (see 'ipcress --help')",
    );
    expect_error_prefix(
        &root,
        &["get", ".."],
        2,
        "ipcress: invalid value '..' for '<NAME>'",
    );
    // Bad size and age: usage errors.
    expect_error(
        &root,
        &["create", "x", "--ring", "64X"],
        2,
        "ipcress: invalid value '64X' for '--ring <SIZE>': bad size \"64X\": expected a number \
         with an optional unit K, M, G or T (powers of 1024; KiB, KB and K are the same) \
         (see 'ipcress --help')",
    );
    expect_error_prefix(
        &root,
        &["create", "x", "--log", "--retain", "soon"],
        2,
        "ipcress: invalid value 'soon' for '--retain <SIZE|AGE>': bad retention",
    );
    expect_error_prefix(
        &root,
        &["frobnicate"],
        2,
        "ipcress: unrecognized subcommand 'frobnicate'",
    );
    // A size the library refuses.
    expect_error(
        &root,
        &["create", "x", "--ring", "3M"],
        1,
        "ipcress: invalid options: ring capacity 3145728 is not a power of two",
    );
    root.ok(&["create", "s", "--ring", "64K"]);
    expect_error(
        &root,
        &["create", "s"],
        1,
        "ipcress: stream already exists: s",
    );
    expect_error(
        &root,
        &["rm", "s", "--consumer", "c"],
        1,
        "ipcress: no such consumer: c",
    );
    expect_error(
        &root,
        &["put", "s", "/nonexistent/file"],
        1,
        "ipcress: cannot open /nonexistent/file: No such file or directory (os error 2)",
    );
    root.ok_in(&["put", "s"], b"hello\n");

    // Another format version: patch the meta's version field.
    root.ok(&["create", "v", "--ring", "64K"]);
    patch(&root.path().join("v/meta"), 8, &99u32.to_le_bytes());
    expect_error(
        &root,
        &["get", "v"],
        1,
        "ipcress: stream v: incompatible stream format: found version 99, this build reads versions 3 and 4",
    );
    expect_error(
        &root,
        &["stat", "v"],
        1,
        "ipcress: stream v: incompatible stream format: found version 99, this build reads versions 3 and 4",
    );

    // Corrupt data: a flipped payload byte fails its checksum.
    root.ok(&["create", "c", "--ring", "64K"]);
    root.ok_in(&["put", "c"], b"payload\n");
    let data = root.path().join("c/data");
    let mut b = std::fs::read(&data).unwrap();
    // 16-byte header, 8-byte commit time, then the payload.
    assert_eq!(&b[24..31], b"payload");
    b[24] ^= 0xff;
    std::fs::write(&data, b).unwrap();
    expect_error(
        &root,
        &["get", "c"],
        1,
        "ipcress: stream c: corrupt data at position 0: checksum mismatch",
    );
    // Corrupt options in the meta file.
    root.ok(&["create", "m", "--ring", "64K"]);
    patch(&root.path().join("m/meta"), 24, &7u32.to_le_bytes());
    expect_error(
        &root,
        &["get", "m"],
        1,
        "ipcress: stream m: corrupt data at position 0: meta file: options checksum mismatch",
    );

    // Encrypted stream without a key, and with the wrong one.
    let k1 = root.path().join("k1");
    let k2 = root.path().join("k2");
    root.ok(&["keygen", k1.to_str().unwrap()]);
    root.ok(&["keygen", k2.to_str().unwrap()]);
    expect_error(
        &root,
        &["keygen", k1.to_str().unwrap()],
        1,
        &format!(
            "ipcress: key file {} already exists; refusing to overwrite it",
            k1.display()
        ),
    );
    root.ok(&[
        "create",
        "e",
        "--ring",
        "64K",
        "--encrypt-key",
        k1.to_str().unwrap(),
    ]);
    root.ok_in(&["put", "e", "--key", k1.to_str().unwrap()], b"x\n");
    expect_error(
        &root,
        &["get", "e"],
        1,
        "ipcress: stream e is encrypted: a key is required (give --key FILE or set IPCRESS_KEY_FILE)",
    );
    expect_error_prefix(
        &root,
        &["get", "e", "--key", k2.to_str().unwrap()],
        1,
        "ipcress: cannot decode record at position 0 of stream e: authentication failed",
    );
    std::fs::set_permissions(&k2, std::fs::Permissions::from_mode(0o644)).unwrap();
    expect_error(
        &root,
        &["get", "e", "--key", k2.to_str().unwrap()],
        1,
        &format!(
            "ipcress: key file {} has mode 0644, which lets group or others access it; run \
             `chmod 600` on it",
            k2.display()
        ),
    );

    // Exec of a program that does not exist.
    root.ok(&["create", "out", "--ring", "64K"]);
    expect_error(
        &root,
        &[
            "exec",
            "--in",
            "s",
            "--out",
            "out",
            "--count",
            "1",
            "--",
            "/nonexistent/prog",
        ],
        1,
        "ipcress: cannot run /nonexistent/prog: No such file or directory (os error 2)",
    );
}

#[test]
fn permission_denied() {
    let root = Root::new("perm");
    root.ok(&["create", "s", "--ring", "64K"]);
    let meta = root.path().join("s/meta");
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    let o = if uid == "0" {
        // root reads anything: run the binary as nobody instead.
        let Ok(setpriv) = which("setpriv") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "setpriv is needed in CI"
            );
            eprintln!("skipped: running as root without setpriv");
            return;
        };
        let mut c = std::process::Command::new(setpriv);
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "get",
            "s",
        ])
        .env("IPCRESS_DIR", root.path());
        run(c, None, LIMIT)
    } else {
        std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o000)).unwrap();
        root.run(&["get", "s"])
    };
    assert_eq!(o.code(), 1, "{}", o.stderr);
    assert_eq!(
        o.stderr,
        format!("ipcress: stream s: permission denied: {}\n", meta.display())
    );
}

fn which(prog: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or(())
}

/// Issue 16: a reader that goes away (`ipcress ls | head -1`) ends the
/// output quietly: exit 0, nothing on stderr, for every command that
/// prints (it panicked with "failed printing to stdout: Broken pipe").
#[test]
fn a_closed_stdout_ends_output_quietly() {
    let root = Root::new("epipe");
    root.ok(&["create", "s", "--ring", "64K"]);
    for args in [
        &["ls"][..],
        &["ls", "--json"],
        &["stat", "--interval", "0"],
        &["stat", "s", "--json"],
        &["stat", "--prometheus"],
    ] {
        let mut cmd = root.cmd(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Closed before the command has opened the stream, let alone
        // printed: its first write fails with EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
}

/// `ipcress demo | head -3`: the demo's report ends quietly when its reader
/// goes, instead of panicking in `println!`.
#[test]
fn a_closed_stdout_ends_the_demo_quietly() {
    let root = Root::new("epipe-demo");
    let mut cmd = root.cmd(&["demo", "--lines", "1000"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err, "");
}

/// Issue 16: completions and manual pages come from the parser's own
/// definition: every command is in them.
#[test]
fn completions_and_manual_pages_name_every_command() {
    let root = Root::new("manual");
    let commands = [
        "create", "ls", "rm", "stat", "put", "get", "exec", "top", "keygen", "bridge", "demo",
    ];
    let bash = String::from_utf8(root.ok(&["completions", "bash"])).unwrap();
    assert!(
        bash.contains("complete") && bash.contains("_ipcress"),
        "{bash}"
    );
    let zsh = String::from_utf8(root.ok(&["completions", "zsh"])).unwrap();
    assert!(zsh.starts_with("#compdef ipcress"), "{zsh}");
    let fish = String::from_utf8(root.ok(&["completions", "fish"])).unwrap();
    for c in commands {
        assert!(
            bash.contains(c) && zsh.contains(c) && fish.contains(c),
            "{c}"
        );
    }
    // (bash completes hidden commands too; zsh and fish leave them out.)
    assert!(!zsh.contains("demo-stage") && !fish.contains("demo-stage"));
    let page = String::from_utf8(root.ok(&["man"])).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH ipcress 1"),
        "{page}"
    );
    for c in commands {
        assert!(page.contains(c), "{c} not in the manual");
    }
    let dir = root.path().join("man1");
    root.ok(&["man", "--out-dir", dir.to_str().unwrap()]);
    for c in commands {
        let p = std::fs::read_to_string(dir.join(format!("ipcress-{c}.1"))).unwrap();
        assert!(p.contains(&format!(".TH ipcress-{c} 1")), "{c}: {p}");
    }
    assert!(dir.join("ipcress.1").exists());
    assert!(!dir.join("ipcress-demo-stage.1").exists());
    let bad = root.run(&["completions", "tcsh"]);
    assert_eq!(bad.code(), 2);
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
}

/// One HTTP GET on loopback: the status code and the body.
fn http_get(port: u16, path: &str) -> (u32, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    let code = r.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = r.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

/// Issue 16: `stat --listen ADDR` serves the metrics over HTTP (the same
/// text `stat --prometheus` prints, encoded by prometheus-client); every
/// scrape reads the streams anew; SIGTERM ends it with exit 0.
#[test]
fn stat_listen_serves_metrics_over_http() {
    use std::io::BufRead;
    let _w = Watchdog::new("stat_listen_serves_metrics_over_http", LIMIT);
    let root = Root::new("listen");
    root.ok(&["create", "s", "--ring", "1M"]);
    root.ok_in(&["put", "s"], b"one\ntwo\n");
    let mut cmd = root.cmd(&["stat", "--listen", "127.0.0.1:0"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut server = Bg::spawn(cmd);
    let mut first = String::new();
    std::io::BufReader::new(server.child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port: u16 = first
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.strip_suffix("/metrics"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    let tail = root.stat("s")["tail"].as_u64().unwrap();
    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("ipcress_tail_bytes{{stream=\"s\"}} {tail}\n")),
        "{body}"
    );
    assert!(
        body.contains("ipcress_messages_total{stream=\"s\"} 2\n"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    root.ok(&["create", "t", "--ring", "64K"]);
    let (_, body) = http_get(port, "/metrics?x=1");
    assert!(
        body.contains("ipcress_tail_bytes{stream=\"t\"} 0\n"),
        "{body}"
    );
    assert_eq!(http_get(port, "/").0, 404);
    server.signal(Signal::TERM);
    let st = server.wait(LIMIT);
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
}
