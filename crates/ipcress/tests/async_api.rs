//! The async API (feature `tokio`) with real processes: round trips on a
//! current-thread and a multi-thread runtime (and without `futex_waitv`),
//! cancellation, many consumers in one process, a producer waiting for
//! space, an idle consumer's CPU time, and a wait in a process forked after
//! its parent's notifier started. The test binary re-runs itself as
//! children (`child_main` dispatches on a role).

mod common;

use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{BufRead, Write};
use std::pin::Pin;
use std::time::{Duration, Instant};

use common::*;
use futures_core::Stream as _;
use ipcress::{Error, StartAt, Stream, StreamOptions};
use rand::{Rng, SeedableRng};

const WATCHDOG: Duration = Duration::from_secs(120);

fn runtime(flavor: &str) -> tokio::runtime::Runtime {
    match flavor {
        "current" => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    }
    .enable_all()
    .build()
    .unwrap()
}

fn base_env(root: &TempRoot, stream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ROOT", root.path().display().to_string()),
        ("STREAM", stream.to_string()),
    ]
}

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    let rt = runtime(&env("FLAVOR"));
    match role.as_str() {
        "forker" => forker(rt),
        "async_producer" => {
            let s = open();
            let count: u64 = env("COUNT").parse().unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let mut p = s.producer().unwrap();
            rt.block_on(async {
                for seq in 0..count {
                    let m = payload(1, seq, rng.random_range(12..4000));
                    if seq % 2 == 0 {
                        p.send_async(&m).await.unwrap();
                    } else {
                        let mut g = p.reserve_async(m.len()).await.unwrap();
                        g.copy_from_slice(&m);
                        g.commit().unwrap();
                    }
                }
            });
            println!("RESULT done");
        }
        "async_consumer" => {
            let s = open();
            let count: u64 = env("COUNT").parse().unwrap();
            let mut c = s.consumer("c").unwrap();
            let (n, bytes) = rt.block_on(async move {
                let mut messages = c.stream();
                let (mut n, mut bytes) = (0u64, 0u64);
                while n < count {
                    let m = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx))
                        .await
                        .unwrap()
                        .unwrap();
                    let (p, seq) = check_payload(&m);
                    assert_eq!((p, seq), (1, n), "out of order");
                    n += 1;
                    bytes += m.len() as u64;
                }
                drop(messages);
                c.commit().unwrap();
                (n, bytes)
            });
            println!("RESULT {n} {bytes}");
        }
        "drain" => {
            // Read what the parent filled the ring with, then the record
            // its send_async was waiting to write.
            let s = open();
            let count: u64 = env("COUNT").parse().unwrap();
            let mut c = s.consumer("c").unwrap();
            for seq in 0..count {
                let m = c.recv().unwrap();
                assert_eq!(check_payload(m.bytes().unwrap()), (1, seq));
            }
            let last = c.recv().unwrap().to_vec().unwrap();
            assert_eq!(last, b"waited");
            c.commit().unwrap();
            println!("RESULT drained {count}");
        }
        "idle" => {
            // Consumers waiting on a stream nobody writes: the process's
            // CPU time over two seconds, then one record wakes them all.
            let s = open();
            let consumers: Vec<_> = (0..16)
                .map(|_| s.subscribe(StartAt::End).unwrap())
                .collect();
            let (cpu, got) = rt.block_on(async {
                let tasks: Vec<_> = consumers
                    .into_iter()
                    .map(|mut c| tokio::spawn(async move { c.recv_async().await.unwrap() }))
                    .collect();
                tokio::time::sleep(Duration::from_millis(200)).await;
                let before = cpu_time();
                let t0 = Instant::now();
                tokio::time::sleep(Duration::from_secs(2)).await;
                let cpu = (cpu_time() - before).as_secs_f64() / t0.elapsed().as_secs_f64();
                s.producer().unwrap().send(b"wake").unwrap();
                let mut got = 0;
                for t in tasks {
                    assert_eq!(&*t.await.unwrap(), b"wake");
                    got += 1;
                }
                (cpu, got)
            });
            println!("RESULT {got} {:.4}", cpu);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Start this process's notifier (a receive that parks, then times out),
/// then `fork` without `exec`: the forked process waits asynchronously for
/// a record the test sends (`grandchild`).
fn forker(rt: tokio::runtime::Runtime) {
    let mem = Stream::create_in_memory("forker", &StreamOptions::ring(1 << 16)).unwrap();
    let mut c = mem.subscribe(StartAt::End).unwrap();
    let parked = rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(100), c.recv_async()).await });
    assert!(parked.is_err(), "a record on an empty stream: {parked:?}");
    drop((c, mem, rt));
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(
        threads.iter().any(|t| t == "ipcress-notify"),
        "no notifier thread before the fork: {threads:?}"
    );
    std::io::stdout().flush().unwrap();
    // SAFETY: the child only runs `grandchild`, which ends in `_exit`; the
    // other threads of this process (the notifier, the test harness's) are
    // not running any code of the child's (they do not exist there).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        grandchild();
    }
    // Bounded: a forked process that hangs is killed, so that the pipe to
    // the test closes.
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child; `status` is a valid, writable int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid: {}", std::io::Error::last_os_error());
        if start.elapsed() > Duration::from_secs(60) {
            unsafe_kill(pid as u32, 9);
            panic!("the forked process {pid} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked process failed: status {status:#x}"
    );
    println!("RESULT forker done");
}

/// The forked process: a new runtime, one `recv_async` that parks (bounded
/// by 20 s), and `_exit` (the test harness it inherited must not go on).
fn grandchild() -> ! {
    let ok = std::panic::catch_unwind(|| {
        let rt = runtime("current");
        let s = open();
        let mut c = s.consumer("c").unwrap();
        println!("RESULT parking {}", std::process::id());
        std::io::stdout().flush().unwrap();
        // The timer first: a `timeout` would poll the receive once more
        // when it elapses, and find the record a wait that nothing woke
        // missed.
        let got = rt.block_on(async {
            tokio::select! {
                biased;
                _ = tokio::time::sleep(Duration::from_secs(20)) => None,
                m = c.recv_async() => Some(m.unwrap()),
            }
        });
        match got {
            Some(m) => println!("RESULT got {}", String::from_utf8_lossy(&m)),
            None => println!("RESULT timed out"),
        }
        c.commit().unwrap();
    })
    .is_ok();
    let _ = std::io::stdout().flush();
    // SAFETY: ends this forked process at once, without unwinding into the
    // test harness or running the exit handlers it inherited.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// User plus system CPU time of this process (/proc/self/stat, in clock
/// ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// An async producer and an async consumer, each its own process, on a
/// ring small enough that the producer waits for space: every record
/// arrives once, in order, with its bytes.
fn round_trip(flavor: &str, extra: &[(&'static str, String)]) {
    let root = TempRoot::new("async-rt");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(256 << 10)).unwrap();
    drop(s.consumer("c").unwrap());
    let count = 20_000u64;
    let mut e = base_env(&root, "s");
    e.push(("FLAVOR", flavor.to_string()));
    e.push(("COUNT", count.to_string()));
    e.extend(extra.iter().cloned());
    let consumer = spawn_child("async_consumer", &e);
    let producer = spawn_child("async_producer", &e);
    let out = wait_with_watchdog(producer, WATCHDOG);
    assert_eq!(results(&out.stdout), vec!["done"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let bytes: u64 = (0..count)
        .map(|seq| payload(1, seq, rng.random_range(12..4000)).len() as u64)
        .sum();
    let out = wait_with_watchdog(consumer, WATCHDOG);
    assert_eq!(results(&out.stdout), vec![format!("{count} {bytes}")]);
    // Nothing more, nothing left unread.
    assert!(s.consumer("c").unwrap().try_recv().unwrap().is_none());
}

#[test]
fn async_round_trip_across_processes_current_thread() {
    round_trip("current", &[]);
}

#[test]
fn async_round_trip_across_processes_multi_thread() {
    round_trip("multi", &[]);
}

/// The notifier's fallback where `futex_waitv` is missing: a timed wait
/// loop (forced here through the environment).
#[test]
fn async_round_trip_without_futex_waitv() {
    round_trip("multi", &[("IPCRESS_NO_FUTEX_WAITV", "1".into())]);
}

/// `recv_async` raced against a timer that often wins (`select!`), while a
/// producer thread sends at an uneven pace: every record still arrives,
/// once and in order, and many receives were cancelled on the way. Every
/// `PAUSE` records the producer waits until the consumer has caught up and
/// cancelled a receive on the empty ring, so that cancellations happen
/// however the two threads are scheduled (on a loaded machine the producer
/// can otherwise stay ahead, and every receive finds a record at once).
#[test]
fn cancelled_recv_async_loses_no_record() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    const PAUSE: u64 = 100;
    let stream = Stream::create_in_memory("cancel", &StreamOptions::ring(1 << 16)).unwrap();
    let mut c = stream.subscribe(StartAt::Start).unwrap();
    let count = 3000u64;
    let sender = stream.clone();
    let (got_n, cancelled_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (seen, cancels) = (got_n.clone(), cancelled_n.clone());
    let producer = std::thread::spawn(move || {
        let mut p = sender.producer().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for seq in 0..count {
            if seq > 0 && seq % PAUSE == 0 {
                let before = cancels.load(SeqCst);
                while seen.load(SeqCst) < seq || cancels.load(SeqCst) == before {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            p.send(&payload(2, seq, rng.random_range(12..500))).unwrap();
            if rng.random_range(0..4) == 0 {
                std::thread::sleep(Duration::from_micros(rng.random_range(0..300)));
            }
        }
    });
    let rt = runtime("current");
    let (got, cancelled) = rt.block_on(async {
        let (mut got, mut cancelled) = (0u64, 0u64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        while got < count {
            let t = Duration::from_micros(rng.random_range(0..200));
            tokio::select! {
                m = c.recv_async() => {
                    let m = m.unwrap();
                    assert_eq!(check_payload(&m), (2, got), "a record was lost or repeated");
                    got += 1;
                    got_n.store(got, SeqCst);
                }
                _ = tokio::time::sleep(t) => {
                    cancelled += 1;
                    cancelled_n.store(cancelled, SeqCst);
                }
            }
        }
        (got, cancelled)
    });
    producer.join().unwrap();
    assert_eq!(got, count);
    let pauses = (count - 1) / PAUSE;
    assert!(
        cancelled >= pauses,
        "only {cancelled} receives were cancelled ({pauses} pauses)"
    );
    assert!(c.try_recv().unwrap().is_none());
}

/// 64 consumers awaiting in one process (tasks of a two-worker runtime)
/// all receive every record, in order, and wait without a thread each.
#[test]
fn many_concurrent_async_consumers_in_one_process() {
    let stream = Stream::create_in_memory("many", &StreamOptions::ring(1 << 20)).unwrap();
    let n = 64;
    let count = 2000u64;
    let rt = runtime("multi");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut messages = stream.subscribe(StartAt::Start).unwrap().into_stream();
            rt.spawn(async move {
                let mut sums = 0u64;
                for seq in 0..count {
                    let m = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx))
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(check_payload(&m), (3, seq));
                    sums += m.len() as u64;
                }
                sums
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
    assert!(threads < n, "{threads} threads for {n} waiting consumers");
    let mut p = stream.producer().unwrap();
    let mut expect = 0u64;
    for seq in 0..count {
        let m = payload(3, seq, 12 + (seq as usize * 7) % 300);
        expect += m.len() as u64;
        p.send(&m).unwrap();
        if seq % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let sums: HashMap<u64, usize> = rt.block_on(async {
        let mut h = HashMap::new();
        for t in tasks {
            *h.entry(t.await.unwrap()).or_insert(0) += 1;
        }
        h
    });
    assert_eq!(sums, HashMap::from([(expect, n)]));
}

/// `send_async` on a full Block ring waits (without blocking its runtime:
/// a timer task keeps ticking meanwhile) and completes once a consumer in
/// another process frees space; the consumer then reads it last.
#[test]
fn send_async_waits_for_space_on_a_full_block_ring() {
    let root = TempRoot::new("async-full");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap();
    drop(s.consumer("c").unwrap());
    let mut p = s.producer().unwrap();
    // Full to the last byte: large records, then the smallest ones.
    let mut filled = 0u64;
    for len in [1000, 12] {
        loop {
            match p.try_send(&payload(1, filled, len)) {
                Ok(_) => filled += 1,
                Err(Error::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(filled > 10);
    let rt = runtime("current");
    rt.block_on(async {
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let t2 = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut send = std::pin::pin!(p.send_async(b"waited"));
        // Still full after 300 ms of waiting: nobody reads.
        let early = tokio::time::timeout(Duration::from_millis(300), send.as_mut()).await;
        assert!(
            early.is_err(),
            "send_async completed on a full ring: {early:?}"
        );
        assert!(
            ticks.load(std::sync::atomic::Ordering::Relaxed) >= 5,
            "the runtime was blocked"
        );
        let mut e = base_env(&root, "s");
        e.push(("FLAVOR", "current".to_string()));
        e.push(("COUNT", filled.to_string()));
        let drain = spawn_child("drain", &e);
        let pos = tokio::time::timeout(WATCHDOG, send)
            .await
            .expect("send_async never completed");
        assert!(pos.unwrap() > 0);
        ticker.abort();
        let out = tokio::task::spawn_blocking(move || wait_with_watchdog(drain, WATCHDOG))
            .await
            .unwrap();
        assert_eq!(results(&out.stdout), vec![format!("drained {filled}")]);
    });
}

/// Sixteen consumers awaiting a stream nobody writes, for two seconds:
/// their process uses far less CPU time than a spinner would (a spinning
/// waiter takes a whole core: 100 % of the elapsed time), and one record
/// then wakes all of them.
#[test]
fn idle_async_consumers_use_no_cpu() {
    let root = TempRoot::new("async-idle");
    drop(Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap());
    let mut e = base_env(&root, "s");
    e.push(("FLAVOR", "multi".to_string()));
    let out = wait_with_watchdog(spawn_child("idle", &e), WATCHDOG);
    let r = results(&out.stdout);
    let (got, cpu) = r[0].split_once(' ').unwrap();
    assert_eq!(got, "16");
    let cpu: f64 = cpu.parse().unwrap();
    eprintln!("idle CPU: {:.2} % of the elapsed time", cpu * 100.0);
    assert!(
        cpu < 0.10,
        "idle async consumers used {:.1} % of a core",
        cpu * 100.0
    );
}

/// A process forked (without `exec`) after its parent's notifier thread
/// started has no such thread: its own async waits must still be woken.
/// The forked process parks in `recv_async`; the test sends one record
/// 300 ms later and the wait returns it (before the notifier was per
/// process, it timed out after 20 s).
fn async_wait_after_fork(extra: &[(&'static str, String)]) {
    let root = TempRoot::new("async-fork");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap();
    drop(s.consumer("c").unwrap());
    let mut e = base_env(&root, "s");
    e.push(("FLAVOR", "current".to_string()));
    e.extend(extra.iter().cloned());
    let mut forker = spawn_child("forker", &e);
    let out = forker.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if let Some(r) = results(l.as_bytes()).pop()
                && tx.send(r).is_err()
            {
                break;
            }
        }
    });
    let forker_pid = forker.id();
    let grandchild = std::cell::Cell::new(None);
    let next = |what: &str| match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(err) => {
            unsafe_kill(forker_pid, 9);
            if let Some(pid) = grandchild.get() {
                unsafe_kill(pid, 9);
            }
            panic!("no {what} from the forked process: {err}");
        }
    };
    let parking = next("parking");
    let pid = parking.strip_prefix("parking ").expect(&parking);
    grandchild.set(Some(pid.parse::<u32>().unwrap()));
    std::thread::sleep(Duration::from_millis(300));
    s.producer().unwrap().send(b"after fork").unwrap();
    assert_eq!(
        next("result"),
        "got after fork",
        "the forked process's async wait was not woken"
    );
    assert_eq!(next("forker result"), "forker done");
    wait_with_watchdog(forker, WATCHDOG);
}

#[test]
fn async_wait_in_a_forked_process_is_woken() {
    async_wait_after_fork(&[]);
}

#[test]
fn async_wait_in_a_forked_process_is_woken_without_futex_waitv() {
    async_wait_after_fork(&[("IPCRESS_NO_FUTEX_WAITV", "1".into())]);
}
