//! Hostile files: damaged or truncated meta and data files, symbolic links
//! in place of stream files and directories, and bad names. Each gives a
//! clear one-line error of a known variant, and nothing outside the
//! stream's own directory is ever touched.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use ipcress::format::{self, meta};
use ipcress::{Error, StartAt, Stream, StreamOptions};

/// Assert the error's Display is one non-empty line, and return it.
fn line(e: &Error) -> String {
    let s = e.to_string();
    assert!(!s.is_empty() && !s.contains('\n'), "not one line: {s:?}");
    s
}

/// Every file under `dir` (following nothing) with its bytes, and every
/// symlink with its target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                m.insert(p, t.into_os_string().into_encoded_bytes());
            } else if md.is_dir() {
                m.insert(p.clone(), b"<dir>".to_vec());
                todo.push(p);
            } else {
                m.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    m
}

fn ring_with_data(root: &Path) -> Stream {
    let s = Stream::create_in(root, "s", &StreamOptions::ring(1 << 16)).unwrap();
    let mut p = s.producer().unwrap();
    for i in 0..20 {
        p.send(&payload(1, i, 100)).unwrap();
    }
    s
}

fn patch(path: &Path, off: usize, bytes: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    b[off..off + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, b).unwrap();
}

fn fix_crc(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let crc = crc32c(&b[..meta::OPTIONS_CRC]);
    b[meta::OPTIONS_CRC..meta::OPTIONS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

fn crc32c(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn open_err(root: &Path) -> Error {
    Stream::open_in(root, "s").expect_err("hostile stream must not open")
}

#[test]
fn meta_with_wrong_magic_version_checksum_or_ranges() {
    let root = TempRoot::new("hmeta");
    drop(ring_with_data(root.path()));
    let m = root.path().join("s/meta");
    let good = std::fs::read(&m).unwrap();

    patch(&m, meta::MAGIC, b"NOTIPCRS");
    let e = open_err(root.path());
    assert!(matches!(e, Error::Corrupt { position: 0, .. }), "{e:?}");
    assert!(line(&e).contains("magic"), "{e}");

    std::fs::write(&m, &good).unwrap();
    patch(&m, meta::VERSION, &7u32.to_le_bytes());
    let e = open_err(root.path());
    assert!(
        matches!(
            e,
            Error::Incompatible {
                found: 7,
                expected: 4
            }
        ),
        "{e:?}"
    );
    line(&e);

    std::fs::write(&m, &good).unwrap();
    patch(&m, meta::POLICY, &2u32.to_le_bytes());
    let e = open_err(root.path());
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(line(&e).contains("checksum"), "{e}");

    // Ranges are checked even when the checksum matches.
    for (off, v) in [
        (meta::SEGMENT_SHIFT, 40u32),
        (meta::SEGMENT_COUNT, 3),
        (meta::SEGMENT_COUNT, 1 << 20),
        (meta::LAYOUT, 9),
        (meta::COMPRESSION, 7),
        (meta::ENCRYPTION, 2),
    ] {
        std::fs::write(&m, &good).unwrap();
        patch(&m, off, &v.to_le_bytes());
        fix_crc(&m);
        let e = open_err(root.path());
        assert!(matches!(e, Error::Corrupt { .. }), "{off}={v}: {e:?}");
        line(&e);
    }

    // Positions past the end: a tail and head from nowhere, a durable
    // consumer saved at an unaligned position past the end.
    std::fs::write(&m, &good).unwrap();
    patch(&m, meta::HEAD, &(u64::MAX - 3).to_le_bytes());
    patch(&m, meta::TAIL, &(u64::MAX >> 1).to_le_bytes());
    let s = Stream::open_in(root.path(), "s").unwrap();
    let mut c = s.subscribe(StartAt::Start).unwrap();
    match c.try_recv() {
        Ok(None) => {}
        Ok(Some(m)) => panic!("read a record at {} past the end", m.position()),
        Err(e) => {
            line(&e);
        }
    }
    drop(c);
    drop(s);
    std::fs::write(&m, &good).unwrap();
    let s = Stream::open_in(root.path(), "s").unwrap();
    drop(s.consumer("d").unwrap());
    drop(s);
    let slot = (0..format::CONSUMER_SLOTS)
        .map(|i| meta::CONSUMERS + i * format::CONSUMER_SLOT_LEN)
        .find(|&o| std::fs::read(&m).unwrap()[o + format::cslot::NAME] == b'd')
        .unwrap();
    patch(
        &m,
        slot + format::cslot::POSITION,
        &(u64::MAX - 2).to_le_bytes(),
    );
    let s = Stream::open_in(root.path(), "s").unwrap();
    let mut c = s.consumer("d").unwrap();
    let e = c.try_recv().expect_err("unaligned position");
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    line(&e);
}

#[test]
fn truncated_files() {
    let root = TempRoot::new("htrunc");
    drop(ring_with_data(root.path()));
    let m = root.path().join("s/meta");
    let good = std::fs::read(&m).unwrap();
    for len in [0, 100, 4096, format::META_LEN - 1] {
        std::fs::write(&m, &good[..len]).unwrap();
        let e = open_err(root.path());
        assert!(matches!(e, Error::Corrupt { .. }), "{len}: {e:?}");
        assert!(line(&e).contains("truncated"), "{e}");
    }
    std::fs::write(&m, &good).unwrap();
    let d = root.path().join("s/data");
    let data = std::fs::read(&d).unwrap();
    std::fs::write(&d, &data[..data.len() / 2]).unwrap();
    let e = open_err(root.path());
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(line(&e).contains("truncated"), "{e}");
    std::fs::remove_file(&d).unwrap();
    let e = open_err(root.path());
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    line(&e);
}

#[test]
fn frame_lengths_past_the_segment_end() {
    for log in [false, true] {
        let root = TempRoot::new("hlen");
        let opts = if log {
            StreamOptions::log(1 << 14)
        } else {
            StreamOptions::ring(1 << 16)
        };
        let opts = opts.unblock_timeout(std::time::Duration::from_millis(50));
        let s = Stream::create_in(root.path(), "s", &opts).unwrap();
        let mut p = s.producer().unwrap();
        let a = p.send(&payload(1, 0, 100)).unwrap();
        let b = p.send(&payload(1, 1, 100)).unwrap();
        p.send(&payload(1, 2, 100)).unwrap();
        drop(p);
        // Damaged while open (a reopen of a log would run tail recovery,
        // which truncates at the first bad frame by design).
        let file = root.path().join(if log {
            "s/0000000000000000.seg"
        } else {
            "s/data"
        });
        // Second frame: length field far past the segment end.
        let off = b as usize;
        let mut w = std::fs::read(&file).unwrap()[off..off + 8].to_vec();
        w[..4].copy_from_slice(&0x00FF_FFF0u32.to_le_bytes());
        patch(&file, off, &w);
        let mut c = s.subscribe(StartAt::Start).unwrap();
        let m = c.recv().unwrap();
        assert_eq!(m.position(), a);
        check_payload(m.bytes().unwrap());
        drop(m);
        // A bad header looks like "not written yet" at first (bytes of an
        // earlier lap can look like that too); once `unblock_timeout` has
        // passed with no producer claiming it, it is reported as corrupt.
        assert!(c.try_recv().unwrap().is_none());
        let e = c.recv().expect_err("damaged length");
        assert!(
            matches!(e, Error::Corrupt { position, .. } if position == b),
            "{e:?}"
        );
        line(&e);
        // The damaged frame was fenced off: reading goes on after it.
        assert_eq!(check_payload(c.recv().unwrap().bytes().unwrap()).1, 2);
    }
}

/// A file outside every stream root that a symlink will point at.
struct Victim {
    _dir: TempRoot,
    path: PathBuf,
}

impl Victim {
    fn new(bytes: &[u8]) -> Victim {
        let dir = TempRoot::new("victim");
        let path = dir.path().join("precious");
        std::fs::write(&path, bytes).unwrap();
        Victim { _dir: dir, path }
    }
    fn dir(&self) -> &Path {
        self.path.parent().unwrap()
    }
}

#[test]
fn ring_data_or_meta_replaced_by_a_symlink() {
    for name in ["data", "meta"] {
        let root = TempRoot::new("hsym");
        drop(ring_with_data(root.path()));
        let f = root.path().join("s").join(name);
        // The victim looks exactly like the real file: if it were followed,
        // it would be mapped and written.
        let victim = Victim::new(&std::fs::read(&f).unwrap());
        let before = snapshot(victim.dir());
        std::fs::remove_file(&f).unwrap();
        symlink(&victim.path, &f).unwrap();
        let e = open_err(root.path());
        assert!(matches!(e, Error::Corrupt { .. }), "{name}: {e:?}");
        assert!(line(&e).contains("symbolic link"), "{e}");
        Stream::remove_in(root.path(), "s").unwrap();
        assert_eq!(snapshot(victim.dir()), before, "{name}: victim touched");
    }
}

#[test]
fn log_segment_replaced_by_a_symlink() {
    let root = TempRoot::new("hlogsym");
    let seg = 1u64 << 14;
    let s = Stream::create_in(root.path(), "s", &StreamOptions::log(seg)).unwrap();
    let mut p = s.producer().unwrap();
    let mut n = 0;
    while s.tail() < seg + 100 {
        p.send(&payload(1, n, 500)).unwrap();
        n += 1;
    }
    let dir = root.path().join("s");
    let seg0 = dir.join("0000000000000000.seg");
    let victim = Victim::new(&std::fs::read(&seg0).unwrap());
    let before = snapshot(victim.dir());

    // A segment the producer is about to roll into is planted as a link.
    let seg2 = dir.join("0000000000000002.seg");
    symlink(&victim.path, &seg2).unwrap();
    let e = loop {
        match p.send(&payload(1, n, 500)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(s.tail() < 3 * seg, "rolled past the planted link");
    };
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(line(&e).contains("symbolic link"), "{e}");
    // Every record sent before the link is readable.
    let mut c = s.subscribe(StartAt::Start).unwrap();
    for i in 0..n {
        assert_eq!(check_payload(c.recv().unwrap().bytes().unwrap()).1, i);
    }
    drop(c);
    drop(p);
    drop(s);

    // An existing segment replaced by a link: refused at open.
    std::fs::remove_file(&seg2).unwrap();
    std::fs::remove_file(&seg0).unwrap();
    symlink(&victim.path, &seg0).unwrap();
    let e = open_err(root.path());
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(line(&e).contains("symbolic link"), "{e}");
    Stream::remove_in(root.path(), "s").unwrap();
    assert_eq!(snapshot(victim.dir()), before, "victim touched");
}

#[test]
fn stream_directory_symlinked_out_of_the_root() {
    let root = TempRoot::new("hdir");
    // Outside the root, a real stream (with data a writer could damage).
    let outside = TempRoot::new("outside");
    drop(ring_with_data(outside.path()));
    let before = snapshot(outside.path());
    symlink(outside.path().join("s"), root.path().join("s")).unwrap();

    let e = open_err(root.path());
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(line(&e).contains("symbolic links are refused"), "{e}");
    let e = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    line(&e);
    // Removing the stream removes the link only.
    Stream::remove_in(root.path(), "s").unwrap();
    assert!(std::fs::symlink_metadata(root.path().join("s")).is_err());
    assert_eq!(snapshot(outside.path()), before, "outside stream touched");
}

#[test]
fn bad_names_are_refused_everywhere() {
    let parent = TempRoot::new("hnames");
    let root = parent.path().join("root");
    let s = Stream::create_in(&root, "ok", &StreamOptions::ring(1 << 16)).unwrap();
    std::fs::write(parent.path().join("x"), b"do not touch").unwrap();
    let before = snapshot(parent.path());
    let long = "a".repeat(200);
    let names = [
        "",
        ".",
        "..",
        "../x",
        "../root/ok",
        "a/b",
        "/tmp/x",
        "a\0b",
        "a\nb",
        "é",
        &long,
    ];
    for name in names {
        let check = |e: Error| {
            assert!(matches!(e, Error::InvalidName { .. }), "{name:?}: {e:?}");
            let l = line(&e);
            assert!(l.len() < 400, "{l}");
        };
        check(Stream::create_in(&root, name, &StreamOptions::ring(1 << 16)).unwrap_err());
        check(Stream::open_in(&root, name).unwrap_err());
        check(Stream::remove_in(&root, name).unwrap_err());
        check(s.consumer(name).err().unwrap());
        check(s.group(name).err().unwrap());
        check(s.user_slot(name).err().unwrap());
    }
    assert_eq!(snapshot(parent.path()), before, "something was touched");
    assert_eq!(Stream::list_in(&root).unwrap(), vec!["ok".to_string()]);
}
