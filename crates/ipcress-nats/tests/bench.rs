//! Bridge throughput for 1 KiB records against a plain async-nats
//! JetStream publisher on the same server, in the same run. Reports the
//! numbers (no timing is asserted); `bench_bridge` fails unless T equals
//! S and the unbatched JetStream stream holds one message per record.

mod common;

use common::*;
use ipcress_nats::{BenchConfig, bench_bridge};

#[test]
fn bench_bridge_vs_plain_publisher() {
    let Some(bin) = nats_server() else { return };
    let work = work_dir();
    let root = shm_dir();
    let srv = Server::single(&bin, work.path());
    let mut cfg = BenchConfig::new(&srv.url(), root.path());
    cfg.records = 100_000;
    cfg.record_size = 1024;
    let r = bench_bridge(&cfg).unwrap();
    eprintln!("{r}");
    assert_eq!(r.records, 100_000);
}
