//! A full file system never kills a process with SIGBUS: segments are
//! reserved (posix_fallocate) before they are mapped, so a full tmpfs is
//! `Error::NoSpace` when a log rolls into a new segment, or when a ring is
//! created, and everything committed before stays readable.
//!
//! Needs root (it mounts a 4 MiB tmpfs). With `CI=true` a missing
//! privilege is a failure; elsewhere the test prints a note and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use ipcress::{Error, StartAt, Stream, StreamOptions};

const SEGMENT: u64 = 256 << 10;

/// A small tmpfs, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still in use (a failing test holding a mapping): detach.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    let root = PathBuf::from(env("ROOT"));
    match role.as_str() {
        "fill" => {
            // Write until the file system is full; report what was committed.
            let s = Stream::open_in(&root, "s").unwrap();
            let mut p = s.producer().unwrap();
            let mut n = 0u64;
            let e = loop {
                match p.send(&payload(1, n, 1000)) {
                    Ok(_) => n += 1,
                    Err(e) => break e,
                }
            };
            let Error::NoSpace { path } = &e else {
                panic!("expected NoSpace, got {e:?}")
            };
            let line = e.to_string();
            assert!(!line.contains('\n'), "{line}");
            // At roll time: the first segment after the committed bytes
            // could not be reserved (before any position was claimed in
            // it). 1000-byte records are 1024-byte frames: the tail may
            // be exactly at a segment start.
            let next = format!("{:016x}.seg", s.tail().div_ceil(SEGMENT));
            assert!(path.ends_with(&next), "{line}, tail {}", s.tail());
            // Still alive, still refusing cleanly.
            let again = p.send(&payload(1, n, 1000));
            assert!(matches!(again, Err(Error::NoSpace { .. })), "{again:?}");
            println!("RESULT {n} {}", s.tail());
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn full_tmpfs_is_no_space_never_sigbus() {
    if !require(is_root(), "not running as root") {
        return;
    }
    let dir = TempRoot::on_disk("nospace");
    let mnt = match Tmpfs::mount(dir.path(), "4m") {
        Ok(m) => m,
        Err(e) => {
            require(false, &e);
            return;
        }
    };
    let root = mnt.0.clone();
    let s = Stream::create_in(&root, "s", &StreamOptions::log(SEGMENT)).unwrap();

    // The writer is another process: a SIGBUS would show as its death.
    let child = spawn_child("fill", &[("ROOT", root.display().to_string())]);
    let out = wait_with_watchdog(child, Duration::from_secs(120));
    let r = results(&out.stdout);
    let f: Vec<u64> = r[0].split(' ').map(|x| x.parse().unwrap()).collect();
    let (n, tail) = (f[0], f[1]);
    assert!(n > 1000, "only {n} records fit in 4 MiB");
    assert_eq!(s.tail(), tail);

    // Everything committed before the error is there, exactly once.
    let mut c = s.subscribe(StartAt::Start).unwrap();
    for i in 0..n {
        let m = c.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(check_payload(m.bytes().unwrap()), (1, i));
    }
    assert!(
        c.recv_timeout(Duration::from_millis(100))
            .unwrap()
            .is_none()
    );

    // Creating a stream on the full file system fails cleanly too, and
    // leaves nothing behind.
    let e = Stream::create_in(&root, "r", &StreamOptions::ring(8 << 20)).unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "{e:?}");
    assert!(!e.to_string().contains('\n'));
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["s"], "left behind: {left:?}");
    drop(c);
    drop(s);
    drop(mnt);
}
