//! `bridge out` restarted behind what JetStream already holds, after the
//! de-duplication window has passed: it resumes from JetStream's last
//! message, so nothing is stored twice (the dedup window alone would not
//! catch these).

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipcress::{Stream, StreamOptions};

#[test]
fn restart_behind_jetstream_after_dedup_window_batched() {
    restart_behind_jetstream("batched", &[]);
}

#[test]
fn restart_behind_jetstream_after_dedup_window_one_message_per_record() {
    restart_behind_jetstream("single", &["--batch-bytes", "0"]);
}

fn restart_behind_jetstream(tag: &str, extra: &[&str]) {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let srv = Server::single(&bin, work.path());
    let url = srv.url();
    let js_name = format!("RES_{tag}");
    let subject = format!("res.{tag}");
    // The JetStream stream, with a de-duplication window of one second.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = async_nats::connect(url.as_str()).await.unwrap();
        async_nats::jetstream::new(c)
            .create_stream(async_nats::jetstream::stream::Config {
                name: js_name.clone(),
                subjects: vec![subject.clone()],
                duplicate_window: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let opts = StreamOptions::log(16 << 20);
    let src = Stream::create_in(root.path(), "src", &opts).unwrap();
    let dst = Stream::create_in(root.path(), "dst", &opts).unwrap();
    let r = root.path().display().to_string();
    let (n1, n2) = (4_000, 6_000);
    fill(&src, 0..n1);
    let out_name = ipcress_nats::out_name(&subject);
    let mut out = Bridge::spawn(
        "out",
        work.path(),
        &out_args(&r, &url, &subject, &js_name, extra),
    );
    // Wait until every record is acknowledged (guard word 0 = acked + 1).
    let end = src.tail();
    let t0 = Instant::now();
    while src
        .find_user_slot(&out_name)
        .is_none_or(|g| g.get(0) <= end)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "bridge out did not finish; {}",
            out.tail_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    out.stop();
    // As if every ack had been lost: the local side knows of nothing sent.
    src.remove_consumer(&out_name).unwrap();
    src.user_slot(&out_name).unwrap().set(0, 0);
    // Past the de-duplication window, with more records written.
    std::thread::sleep(Duration::from_millis(1_500));
    fill(&src, n1..n2);
    out.start();
    let mut inb = Bridge::spawn(
        "in",
        work.path(),
        &in_args(&r, &url, &js_name, "res-in", &[]),
    );
    let what = || format!("{}\n{}", out.tail_log(), inb.tail_log());
    verify(&dst, n2, Duration::from_secs(120), &what);
    out.stop();
    inb.stop();
}
