//! `bridge in` from a JetStream stream written by an ordinary NATS client
//! (no ipcress headers): every message becomes one record, in order, once,
//! also into an encrypted stream, with `bridge in` killed and restarted
//! while the messages arrive.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipcress::{Key, StartAt, Stream, StreamOptions};

/// Message `i`: its index, then up to 700 bytes.
fn message(i: u64) -> Vec<u8> {
    let mut v = format!("plain {i} ").into_bytes();
    v.extend((0..(i * 7919) % 700).map(|j| (j ^ i) as u8));
    v
}

fn check(t: &Stream, n: u64, what: &dyn Fn() -> String) {
    let mut c = t.subscribe(StartAt::Start).unwrap();
    for i in 0..n {
        let m = c
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
            .unwrap_or_else(|| panic!("{i} of {n} records in {}; {}", t.name(), what()));
        let got = m.to_vec().unwrap();
        assert!(
            got == message(i),
            "record {i} of {} differs: {:?}; {}",
            t.name(),
            String::from_utf8_lossy(&got[..got.len().min(16)]),
            what()
        );
    }
    assert!(
        c.recv_timeout(Duration::from_secs(2)).unwrap().is_none(),
        "an extra record in {}",
        t.name()
    );
}

#[test]
fn plain_publisher_into_plain_and_encrypted_streams_with_kills() {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let srv = Server::single(&bin, work.path());
    let url = srv.url();
    let key_path = work.path().join("key");
    let key = Key::write_new(&key_path).unwrap();
    let dst = Stream::create_in(root.path(), "dst", &StreamOptions::log(8 << 20)).unwrap();
    drop(
        Stream::create_in(
            root.path(),
            "enc",
            &StreamOptions::log(8 << 20).encrypted(true),
        )
        .unwrap(),
    );
    let enc = Stream::open_in(root.path(), "enc")
        .unwrap()
        .with_key(&key)
        .unwrap();
    let n = 20_000u64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let js = rt.block_on(async {
        let c = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(c);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "PLAIN".into(),
            subjects: vec!["plain.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        js
    });
    let r = root.path().display().to_string();
    let k = key_path.display().to_string();
    let mut into_plain = Bridge::spawn("in", work.path(), &in_args(&r, &url, "PLAIN", "p1", &[]));
    let mut into_enc = Bridge::spawn(
        "in-enc",
        work.path(),
        &in_args(&r, &url, "PLAIN", "p2", &["--stream", "enc", "--key", &k]),
    );
    // Publish in the background, with a header of its own on some.
    let publisher = std::thread::spawn(move || {
        rt.block_on(async {
            for i in 0..n {
                let mut h = async_nats::HeaderMap::new();
                if i % 3 == 0 {
                    h.insert("X-App", "demo");
                }
                js.publish_with_headers(format!("plain.{}", i % 5), h, message(i).into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        })
    });
    let mut rng = Rng(seed());
    let t0 = Instant::now();
    while into_plain.kills < 3 || into_enc.kills < 3 {
        std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
        let b = if into_plain.kills <= into_enc.kills {
            &mut into_plain
        } else {
            &mut into_enc
        };
        b.kill();
        b.start();
        assert!(t0.elapsed() < Duration::from_secs(120), "took too long");
    }
    publisher.join().unwrap();
    let what = || format!("{}\n{}", into_plain.tail_log(), into_enc.tail_log());
    check(&dst, n, &what);
    check(&enc, n, &what);
    into_plain.stop();
    into_enc.stop();
}
