//! Access control: stream files are created 0600 in a 0700 directory (or
//! exactly the requested group mode, whatever the umask), and a process of
//! another user is refused with `Error::PermissionDenied`.
//!
//! The cross-user tests need root and `setpriv` (util-linux). With
//! `CI=true` a missing one is a failure; elsewhere the test prints a note
//! and passes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ipcress::{Error, StartAt, Stream, StreamOptions};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file of a stream directory and its mode.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), mode(&e.path()))
        })
        .collect();
    v.sort();
    v
}

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    let root = PathBuf::from(env("ROOT"));
    match role.as_str() {
        "create_group_stream" => {
            let opts = StreamOptions::log(1 << 14).mode(0o660);
            let s = Stream::create_in(&root, "g", &opts).unwrap();
            s.producer().unwrap().send(b"hello").unwrap();
            println!("RESULT created");
        }
        "consume" => match Stream::open_in(&root, &env("STREAM")) {
            Ok(s) => {
                let mut c = s.subscribe(StartAt::Start).unwrap();
                let m = c.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
                println!(
                    "RESULT read {}",
                    String::from_utf8_lossy(m.bytes().unwrap())
                );
            }
            Err(Error::PermissionDenied { path }) => {
                let e = Error::PermissionDenied { path: path.clone() }.to_string();
                assert!(!e.contains('\n'));
                println!("RESULT denied {}", path.display());
            }
            Err(e) => println!("RESULT other {e:?}"),
        },
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn files_are_private_by_default() {
    let root = TempRoot::new("modes");
    let s = Stream::create_in(root.path(), "r", &StreamOptions::ring(1 << 16)).unwrap();
    let l = Stream::create_in(root.path(), "l", &StreamOptions::log(1 << 12)).unwrap();
    let mut p = l.producer().unwrap();
    for i in 0..20 {
        p.send(&payload(1, i, 500)).unwrap();
    }
    assert_eq!(mode(s.dir()), 0o700);
    assert_eq!(
        modes(s.dir()),
        [("data".into(), 0o600), ("meta".into(), 0o600)]
    );
    assert_eq!(mode(l.dir()), 0o700);
    let m = modes(l.dir());
    assert!(m.len() >= 3, "{m:?}");
    assert!(m.iter().all(|(_, md)| *md == 0o600), "{m:?}");
}

#[test]
fn group_mode_is_exact_whatever_the_umask() {
    let root = TempRoot::new("gmodes");
    // Under this process's umask (typically 022)...
    let s = Stream::create_in(root.path(), "r", &StreamOptions::ring(1 << 16).mode(0o660)).unwrap();
    assert_eq!(mode(s.dir()), 0o770);
    assert_eq!(
        modes(s.dir()),
        [("data".into(), 0o660), ("meta".into(), 0o660)]
    );
    // ...and under umask 077, in a child.
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .args(["-c", "umask 077; exec \"$@\"", "sh"])
        .arg(&exe)
        .args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env("IPCRESS_CHILD_ROLE", "create_group_stream")
        .env("ROOT", root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(results(&out.stdout), ["created"]);
    let dir = root.path().join("g");
    assert_eq!(mode(&dir), 0o770);
    let m = modes(&dir);
    assert!(
        m.len() >= 2 && m.iter().all(|(_, md)| *md == 0o660),
        "{m:?}"
    );
    // Invalid modes are refused.
    for bad in [0o666, 0o644, 0o700, 0o400] {
        let e = Stream::create_in(root.path(), "bad", &StreamOptions::ring(1 << 16).mode(bad))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidOptions(_)), "{bad:o}: {e:?}");
    }
}

/// Run this test binary as `uid:gid` (no supplementary groups) in role
/// "consume" on stream `name`.
fn consume_as(root: &Path, name: &str, uid: u32, gid: u32) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(&exe)
        .args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env("IPCRESS_CHILD_ROLE", "consume")
        .env("ROOT", root)
        .env("STREAM", name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child as {uid}:{gid} failed: {out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = results(&out.stdout);
    assert_eq!(r.len(), 1, "{r:?}");
    r[0].clone()
}

#[test]
fn another_user_is_refused() {
    if !require(is_root(), "not running as root") || !require(have_setpriv(), "setpriv missing") {
        return;
    }
    let root = TempRoot::new("otheruser");
    // The root directory itself is open to everyone; the stream is not.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Stream::create_in(root.path(), "private", &StreamOptions::ring(1 << 16)).unwrap();
    s.producer().unwrap().send(b"secret").unwrap();
    let before = std::fs::read(s.dir().join("meta")).unwrap();

    let r = consume_as(root.path(), "private", 65534, 65534);
    let path = r.strip_prefix("denied ").unwrap_or_else(|| panic!("{r}"));
    assert!(Path::new(path).starts_with(s.dir()), "{path}");
    assert_eq!(std::fs::read(s.dir().join("meta")).unwrap(), before);
    // Not even the owner's group may read a private stream.
    let r = consume_as(root.path(), "private", 65534, 0);
    assert!(r.starts_with("denied "), "{r}");

    // A group stream (0660 in 0770) is open to the group, not to others.
    let opts = StreamOptions::ring(1 << 16).mode(0o660);
    let g = Stream::create_in(root.path(), "shared", &opts).unwrap();
    g.producer().unwrap().send(b"for the group").unwrap();
    assert_eq!(
        consume_as(root.path(), "shared", 65534, 0),
        "read for the group"
    );
    let r = consume_as(root.path(), "shared", 65534, 65534);
    assert!(r.starts_with("denied "), "{r}");
}
