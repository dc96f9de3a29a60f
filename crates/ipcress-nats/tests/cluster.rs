//! A three-node JetStream cluster (loopback), replicas 3; the stream
//! leader is killed mid-flow and restarted later: T still equals S.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ipcress::{Stream, StreamOptions};

const N: u64 = 200_000;

fn stream_leader(rt: &tokio::runtime::Runtime, urls: &str) -> Option<String> {
    rt.block_on(async {
        let addrs: Vec<async_nats::ServerAddr> =
            urls.split(',').map(|u| u.parse().unwrap()).collect();
        let c = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(addrs))
            .await
            .ok()?
            .ok()?;
        let js = async_nats::jetstream::new(c);
        let mut st = js.get_stream("CLU").await.ok()?;
        let info = st.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    })
}

#[test]
fn cluster_node_killed_mid_flow() {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let mut nodes = Server::cluster(&bin, work.path(), 3);
    let urls = nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",");
    let opts = StreamOptions::ring(256 << 20).segments(4);
    let src = Stream::create_in(root.path(), "src", &opts).unwrap();
    let dst = Stream::create_in(root.path(), "dst", &opts).unwrap();
    let r = root.path().display().to_string();
    let mut out = Bridge::spawn(
        "out",
        work.path(),
        &out_args(&r, &urls, "clu.data", "CLU", &["--replicas", "3"]),
    );
    let mut inb = Bridge::spawn("in", work.path(), &in_args(&r, &urls, "CLU", "clu-in", &[]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = Instant::now();
    let leader = loop {
        if let Some(l) = stream_leader(&rt, &urls) {
            break l;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the replicated stream was not created; {}",
            out.tail_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "stream leader {leader} after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let src = src.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                let end = (i + 2_000).min(N);
                fill(&src, i..end);
                i = end;
                std::thread::sleep(Duration::from_millis(40));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // Mid-flow: wait until some records went through, then kill the leader.
    let t1 = Instant::now();
    while dst.tail() < 2 << 20 {
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "no flow; {}",
            inb.tail_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = nodes.iter_mut().find(|n| n.name == leader).unwrap();
    victim.kill();
    eprintln!("killed {leader} at {:.1} s", t0.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(4));
    victim.start();
    eprintln!("restarted {leader} at {:.1} s", t0.elapsed().as_secs_f64());
    producer.join().unwrap();
    let what = || format!("{}\n{}", out.tail_log(), inb.tail_log());
    verify(&dst, N, Duration::from_secs(180), &what);
    eprintln!(
        "all {N} records equal after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(out.is_running() && inb.is_running());
    out.stop();
    inb.stop();
}
