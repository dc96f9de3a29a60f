//! S → bridge out → JetStream → bridge in → T, record for record.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipcress::{Compression, Key, Stream, StreamOptions};

const N: u64 = 200_000;

#[test]
fn roundtrip_200k_records_with_large_ones() {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let srv = Server::single(&bin, work.path());
    let opts = StreamOptions::ring(256 << 20).segments(4);
    let src = Stream::create_in(root.path(), "src", &opts).unwrap();
    let dst = Stream::create_in(root.path(), "dst", &opts).unwrap();
    let r = root.path().display().to_string();
    let url = srv.url();
    let t0 = Instant::now();
    let mut out = Bridge::spawn(
        "out",
        work.path(),
        &out_args(&r, &url, "rt.data", "RT", &[]),
    );
    let mut inb = Bridge::spawn("in", work.path(), &in_args(&r, &url, "RT", "rt-in", &[]));
    // Written while the bridges run.
    fill(&src, 0..N);
    let what = || format!("{}\n{}", out.tail_log(), inb.tail_log());
    verify(&dst, N, Duration::from_secs(240), &what);
    let d = t0.elapsed();
    let mib = volume(N) as f64 / (1 << 20) as f64;
    eprintln!(
        "roundtrip: {N} records, {mib:.0} MiB in {:.2} s ({:.0} rec/s, {:.1} MiB/s end to end)",
        d.as_secs_f64(),
        N as f64 / d.as_secs_f64(),
        mib / d.as_secs_f64()
    );
    out.stop();
    inb.stop();
}

/// Encrypted and compressed records travel as stored: JetStream never holds
/// the plaintext, and T (same key) reads the same records.
#[test]
fn encrypted_compressed_frames_travel_raw() {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let srv = Server::single(&bin, work.path());
    let key_path = work.path().join("key");
    let key = Key::write_new(&key_path).unwrap();
    let opts = StreamOptions::ring(64 << 20)
        .segments(4)
        .encrypted(true)
        .compression(Compression::Lz4);
    let src = Stream::create_in(root.path(), "src", &opts)
        .unwrap()
        .with_key(&key)
        .unwrap();
    drop(Stream::create_in(root.path(), "dst", &opts).unwrap());
    let dst = Stream::open_in(root.path(), "dst")
        .unwrap()
        .with_key(&key)
        .unwrap();
    let n = 3_000;
    fill(&src, 0..n);
    let r = root.path().display().to_string();
    let k = key_path.display().to_string();
    let url = srv.url();
    let mut out = Bridge::spawn(
        "out",
        work.path(),
        &out_args(&r, &url, "enc.data", "ENC", &["--key", &k]),
    );
    let mut inb = Bridge::spawn(
        "in",
        work.path(),
        &in_args(&r, &url, "ENC", "enc-in", &["--key", &k]),
    );
    let what = || format!("{}\n{}", out.tail_log(), inb.tail_log());
    verify(&dst, n, Duration::from_secs(120), &what);
    out.stop();
    inb.stop();
    // What JetStream holds is not the plaintext: no message (batched or
    // not) carries 16 plaintext bytes of any record.
    let plain: std::collections::HashSet<[u8; 16]> = (0..n)
        .filter_map(|i| record(i).get(8..24).map(|w| w.try_into().unwrap()))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let mut st = js.get_stream("ENC").await.unwrap();
        let last = st.info().await.unwrap().state.last_sequence;
        assert!(last > 0);
        let mut bytes = 0;
        for seq in 1..=last {
            let m = st.get_raw_message(seq).await.unwrap();
            bytes += m.payload.len();
            assert!(
                !m.payload
                    .windows(16)
                    .any(|w| plain.contains(<&[u8; 16]>::try_from(w).unwrap())),
                "plaintext visible in JetStream message {seq}"
            );
        }
        // Every record went through (as ciphertext).
        assert!(bytes as u64 >= n * 16, "{bytes} bytes in {last} messages");
    });
}
