//! The logic of the fuzz targets, shared by the cargo-fuzz crate
//! (`fuzz/fuzz_targets/*.rs` include this file with `#[path]`) and by the
//! ordinary test `tests/fuzz_corpus.rs`, which replays the checked-in seed
//! corpus `fuzz/corpus/<target>/` on stable Rust.
//!
//! Every target takes arbitrary bytes. The property is the same for all:
//! no panic, no hang, no out-of-bounds access, no unbounded allocation,
//! and every error is one line of text. Some targets check more (see each).
//!
//! Only `std` and `ipcress` are used, so the fuzz crate needs nothing else.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipcress::codec::{self, Cipher};
use ipcress::format::{self, *};
use ipcress::{
    Checksum, Compression, Consumer, Error, Flags, Key, Policy, StartAt, Stream, StreamOptions,
};

// The flag bits of header word A as docs/FORMAT.md gives them: the library
// keeps its own private (a caller sees a raw frame's as `Flags`), and this
// copy checks `format::parse` against the document.
const F_COMMITTED: u16 = 0x0001;
const F_PADDING: u16 = 0x0002;
const F_BEGIN: u16 = Flags::BEGIN.bits();
const F_END: u16 = Flags::END.bits();
const F_COMPRESSED: u16 = Flags::COMPRESSED.bits();
const F_ENCRYPTED: u16 = Flags::ENCRYPTED.bits();
const F_CHECKSUM: u16 = 0x0080;
const F_PAD8: u16 = 0x0200;
/// Every bit this version knows (FOREIGN 0x0100, TIMED 0x0400 and ABORTED
/// 0x0040 among them).
const F_KNOWN: u16 = 0x07FF;
const _: () = assert!(F_BEGIN == 0x0004 && F_END == 0x0008);
const _: () = assert!(F_COMPRESSED == 0x0010 && F_ENCRYPTED == 0x0020);

/// The targets by name (the name is the corpus directory).
#[allow(clippy::type_complexity)]
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("frame_header", frame_header),
    ("meta_file", meta_file),
    ("ring_data", ring_data),
    ("codec", codec_decoders),
];

// ---- small helpers --------------------------------------------------------

/// Reads little-endian integers from the input, zeros past its end.
struct Input<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn new(b: &'a [u8]) -> Self {
        Input { b, at: 0 }
    }
    fn u8(&mut self) -> u8 {
        let v = self.b.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        v
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut v = [0u8; 8];
        for x in &mut v {
            *x = self.u8();
        }
        u64::from_le_bytes(v)
    }
    fn rest(&self) -> &'a [u8] {
        self.b.get(self.at..).unwrap_or(&[])
    }
}

fn word_at(buf: &[u8], off: u64) -> u64 {
    let mut v = [0u8; 8];
    for (i, x) in v.iter_mut().enumerate() {
        *x = off
            .checked_add(i as u64)
            .and_then(|o| buf.get(o as usize))
            .copied()
            .unwrap_or(0);
    }
    u64::from_le_bytes(v)
}

/// Every error the library returns is a single line.
fn one_line(e: &Error) {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s:?}");
}

/// A per-process scratch directory for streams made from fuzz input.
fn scratch_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("ipcress-fuzz-{}", std::process::id()))
    })
}

/// A fresh root directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = scratch_base().join(format!("r{}", N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&p);
        // Another thread's last Scratch may remove the base between the
        // moment it is made and the moment `p` is made in it: try again.
        let mut tries = 0;
        while let Err(e) = std::fs::create_dir_all(&p) {
            tries += 1;
            assert!(tries < 100, "scratch dir {}: {e}", p.display());
        }
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // Leave nothing behind once the last one is gone.
        let _ = std::fs::remove_dir(scratch_base());
    }
}

/// The key used for every encrypted stream made here.
fn key() -> Key {
    Key::from_bytes([7u8; 32])
}

/// How a drained message is read.
#[derive(Clone, Copy)]
enum ReadMode {
    Bytes,
    ToVec,
    Reader,
}

fn read_mode(b: u8) -> ReadMode {
    match b % 3 {
        0 => ReadMode::Bytes,
        1 => ReadMode::ToVec,
        _ => ReadMode::Reader,
    }
}

/// Read what a consumer can get, bounded. `patient`: wait a little on holes
/// so that the unblocker (unblock_timeout = 1 ms) gets to run.
fn drain(c: &mut Consumer, mode: ReadMode, patient: bool) -> usize {
    let mut got = 0;
    let mut idle = 0;
    for _ in 0..256 {
        match c.try_recv() {
            Ok(Some(m)) => {
                idle = 0;
                got += 1;
                consume(m, mode);
            }
            Ok(None) => {
                if !patient || idle >= 6 {
                    break;
                }
                idle += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                one_line(&e);
                match e {
                    // The consumer moved on: keep reading.
                    Error::Lagged { .. } | Error::Aborted { .. } => {}
                    _ => break,
                }
            }
        }
    }
    got
}

fn consume(m: ipcress::Message<'_>, mode: ReadMode) {
    let _ = m.position();
    match mode {
        ReadMode::Bytes => {
            if let Some(b) = m.bytes() {
                std::hint::black_box(b.iter().fold(0u8, |a, &x| a ^ x));
            }
        }
        ReadMode::ToVec => {
            if let Err(e) = m.to_vec() {
                one_line(&e);
            }
        }
        ReadMode::Reader => {
            let mut r = m.reader();
            let mut buf = [0u8; 700];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        assert!(!e.to_string().contains('\n'));
                        break;
                    }
                }
            }
        }
    }
}

// ---- target: frame headers ------------------------------------------------

/// `format::parse` on arbitrary words at arbitrary positions, and a walk of
/// an arbitrary segment the way a reader does it, trusting only what
/// `parse` accepted: every slice taken must be in bounds.
pub fn frame_header(data: &[u8]) {
    let mut inp = Input::new(data);
    let a = inp.u64();
    let b = inp.u64();
    let position = inp.u64();
    let shift = MIN_SEGMENT_SHIFT + inp.u8() as u32 % (MAX_SEGMENT_SHIFT - MIN_SEGMENT_SHIFT + 1);
    let seg = 1u64 << shift;
    let lap_shift = shift + inp.u8() as u32 % 17;
    let lap = if inp.u8() & 1 == 0 {
        lap_of(position, lap_shift)
    } else {
        inp.u64() >> 16
    };
    let offset = position & (seg - 1);
    check_parse(a, b, position, lap, offset, seg);

    // Round trips of the word helpers.
    let w = split_a(a);
    assert_eq!(word_a(w.flags, w.lap), a);
    assert_eq!(word_b(b_len(b), b_check(b)), b);
    assert_eq!(lap_of(position, lap_shift) >> LAP_BITS, 0);

    // Walk the rest of the input as one 4 KiB segment at some position.
    let body = inp.rest();
    let seg = 4096u64;
    let base = (position & !(seg - 1)) & !TAIL_LOCK;
    let lap_shift = 12 + (lap_shift % 8);
    let mut off = 0u64;
    let mut steps = 0;
    while off < seg {
        steps += 1;
        assert!(steps <= 512, "a walk of one segment cannot take more steps");
        let p = base + off;
        let (a, b) = (word_at(body, off), word_at(body, off + 8));
        match format::parse(a, b, p, lap_of(p, lap_shift), off, seg) {
            Ok(Slot::Frame { len, flags, total }) => {
                let end = off + total;
                assert!(end <= seg);
                if total > 8 {
                    // The payload is inside the segment: a reader may
                    // slice it without a bounds failure.
                    let start = (off as usize) + HEADER_LEN;
                    let stop = start + len as usize;
                    assert!(stop as u64 <= seg);
                    if flags & F_CHECKSUM != 0 {
                        let mut payload = vec![0u8; len as usize];
                        for (i, x) in payload.iter_mut().enumerate() {
                            *x = body.get(start + i).copied().unwrap_or(0);
                        }
                        std::hint::black_box(frame_crc(p, len, flags, &payload) == b_check(b));
                    }
                }
                off = end;
            }
            Ok(Slot::Empty) | Err(_) => off += 8,
        }
    }
}

fn check_parse(a: u64, b: u64, position: u64, lap: u64, offset: u64, seg: u64) {
    match format::parse(a, b, position, lap, offset, seg) {
        Ok(Slot::Empty) => {
            let w = split_a(a);
            assert!(w.flags & F_COMMITTED == 0 || w.lap != lap);
        }
        Ok(Slot::Frame { len, flags, total }) => {
            assert!(flags & F_COMMITTED != 0);
            assert_eq!(flags & !F_KNOWN, 0, "unknown flags accepted");
            assert!(total >= 8 && total.is_multiple_of(8), "total {total}");
            assert!(offset + total <= seg, "frame past its segment");
            if flags & F_PAD8 != 0 {
                // 8-byte padding: word A alone.
                assert!(total == 8 && len == 0 && flags & F_PADDING != 0);
                return;
            }
            assert_eq!(total, frame_len(len as u64));
            assert_eq!(len, b_len(b));
            if flags & F_CHECKSUM == 0 {
                assert_eq!(b_check(b), pos_check(position), "position not checked");
            }
            if flags & F_PADDING != 0 {
                assert_eq!(flags & (F_BEGIN | F_END | F_COMPRESSED | F_ENCRYPTED), 0);
            }
        }
        Err(reason) => assert!(!reason.contains('\n')),
    }
}

// ---- templates: real streams to start from --------------------------------

/// A stream's files as bytes: the meta file and the data files by name.
#[derive(Clone)]
pub struct Files {
    pub meta: Vec<u8>,
    pub data: Vec<(String, Vec<u8>)>,
}

fn read_files(dir: &Path) -> Files {
    let mut data = Vec::new();
    let mut meta = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("stream dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    for n in names {
        let bytes = std::fs::read(dir.join(&n)).expect("read stream file");
        if n == "meta" {
            meta = bytes;
        } else if !n.starts_with('.') {
            data.push((n, bytes));
        }
    }
    Files { meta, data }
}

fn write_files(dir: &Path, f: &Files, meta: &[u8]) {
    std::fs::create_dir_all(dir).expect("stream dir");
    std::fs::write(dir.join("meta"), meta).expect("write meta");
    for (n, b) in &f.data {
        std::fs::write(dir.join(n), b).expect("write data");
    }
}

/// Fill a stream with a bit of everything: small and empty messages,
/// reserve/commit, an aborted grant, a fragmented message, a durable
/// consumer part way and a group.
pub fn populate(s: &Stream) {
    let mut p = s.producer().expect("producer");
    for i in 0..12u32 {
        let len = (i as usize * 97) % 500;
        let msg: Vec<u8> = (0..len).map(|j| (j as u32 * 31 + i) as u8).collect();
        p.send(&msg).expect("send");
    }
    p.send(b"").expect("send empty");
    let mut g = p.reserve(40).expect("reserve");
    g.copy_from_slice(&[0x5a; 40]);
    g.commit().expect("commit");
    drop(p.reserve(100).expect("reserve"));
    {
        let mut w = p.writer().expect("writer");
        let big: Vec<u8> = (0..2200u32).map(|j| (j % 251) as u8).collect();
        std::io::Write::write_all(&mut w, &big).expect("write");
        w.finish().expect("finish");
    }
    p.send(&[1u8; 200]).expect("send");
    // Compressible data (stored compressed when the stream compresses).
    p.send(&[b'a'; 500]).expect("send");
    let mut c = s.consumer("c").expect("durable");
    for _ in 0..3 {
        let _ = c.try_recv().expect("recv").is_some();
    }
    c.commit().expect("commit");
    drop(c);
    let mut m = s.group("g").expect("group");
    let _ = m.try_recv().expect("recv").is_some();
    drop(m);
    let u = s.user_slot("u").expect("user slot");
    u.set(0, 42);
}

fn meta_template(log: bool) -> &'static Files {
    static T: [OnceLock<Files>; 2] = [OnceLock::new(), OnceLock::new()];
    T[log as usize].get_or_init(|| {
        let sc = Scratch::new();
        let opts = if log {
            StreamOptions::log(4096)
        } else {
            StreamOptions::ring(16384).segments(4)
        };
        let s = Stream::create_in(&sc.0, "s", &opts).expect("create template");
        populate(&s);
        drop(s);
        read_files(&sc.0.join("s"))
    })
}

// ---- target: the meta file ------------------------------------------------

/// Fixes the options checksum of a meta image (so that the fuzzer reaches
/// the range checks and the shared words).
pub fn fix_meta_crc(meta: &mut [u8]) {
    if meta.len() >= meta::OPTIONS_CRC + 4 {
        let crc = crc32c_of(&meta[..meta::OPTIONS_CRC]);
        meta[meta::OPTIONS_CRC..meta::OPTIONS_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

fn crc32c_of(b: &[u8]) -> u32 {
    // CRC-32C of the bytes: frame_crc(len, flags, payload) covers 6 header
    // bytes first, so compute it directly (Castagnoli, reflected).
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

/// Arbitrary bytes as a meta file next to valid data files.
///
/// Input: byte 0 selects the mode. Bit 0 clear: the rest of the input *is*
/// the meta file (any length). Bit 0 set: the rest is a list of patches
/// `(offset u16, n u8, n bytes)` applied to a valid meta file, with the
/// options checksum fixed afterwards when bit 2 is set. Bit 1: log
/// template instead of ring. Bits 3..: how messages are read.
pub fn meta_file(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let log = mode & 2 != 0;
    let t = meta_template(log);
    let meta = if mode & 1 == 0 {
        inp.rest().to_vec()
    } else {
        let mut m = t.meta.clone();
        let mut patches = 0;
        while inp.rest().len() >= 3 && patches < 64 {
            patches += 1;
            let off = inp.u16() as usize % m.len();
            let n = (inp.u8() as usize % 33).min(inp.rest().len());
            let end = (off + n).min(m.len());
            let src = &inp.rest()[..end - off];
            m[off..end].copy_from_slice(src);
            inp.at += n;
        }
        if mode & 4 != 0 {
            fix_meta_crc(&mut m);
        }
        m
    };
    let sc = Scratch::new();
    write_files(&sc.0.join("s"), t, &meta);
    exercise_stream(&sc.0, read_mode(mode >> 3), false);
}

/// Open the stream `s` under `root` and read it every way a consumer can.
fn exercise_stream(root: &Path, mode: ReadMode, patient: bool) {
    let s = match Stream::open_in(root, "s") {
        Ok(s) => s,
        Err(e) => {
            one_line(&e);
            return;
        }
    };
    let s = if s.encrypted() {
        match s.with_key(&key()) {
            Ok(s) => s,
            Err(e) => {
                one_line(&e);
                return;
            }
        }
    } else {
        s
    };
    std::hint::black_box((s.tail(), s.head(), s.consumers().len(), s.producer_totals()));
    let _ = s.find_user_slot("u").map(|u| u.get(0));
    match s.subscribe(StartAt::Start) {
        Ok(mut c) => {
            drain(&mut c, mode, patient);
        }
        Err(e) => one_line(&e),
    }
    match s.consumer("c") {
        Ok(mut c) => {
            drain(&mut c, mode, patient);
        }
        Err(e) => one_line(&e),
    }
    match s.group("g") {
        Ok(mut c) => {
            drain(&mut c, mode, patient);
        }
        Err(e) => one_line(&e),
    }
    for from in [StartAt::End, StartAt::Position(s.tail())] {
        match s.subscribe(from) {
            Ok(mut c) => match c.recv_raw_timeout(Duration::ZERO) {
                Ok(_) => {}
                Err(e) => one_line(&e),
            },
            Err(e) => one_line(&e),
        }
    }
    for p in [0, 8, s.head(), s.tail()] {
        if let Err(e) = s.is_committed(p) {
            one_line(&e);
        }
    }
}

// ---- target: the data of a ring (frames, fragments) -----------------------

/// Arbitrary bytes as the `data` file of a ring (2 segments of 4 KiB)
/// under a valid meta file.
///
/// Input: byte 0 = options (bits 0-1 compression none/lz4/zstd/none, bit 2
/// no checksum, bit 3 encrypted, bit 4 overwrite, bit 5 tail and head from
/// the input, bits 6-7 read mode). With bit 5, two u64 follow: tail (kept
/// below 4 laps) and head (kept at or below the tail). The rest is the
/// data file (zero-filled to 8 KiB).
pub fn ring_data(data: &[u8]) {
    const CAP: u64 = 8192;
    let mut inp = Input::new(data);
    let o = inp.u8();
    let compression = match o & 3 {
        1 => Compression::Lz4,
        2 => Compression::Zstd(1),
        _ => Compression::None,
    };
    let mut opts = StreamOptions::ring(CAP)
        .segments(2)
        .compression(compression)
        .unblock_timeout(Duration::from_millis(1));
    if o & 4 != 0 {
        opts = opts.checksum(Checksum::None);
    }
    if o & 8 != 0 {
        opts = opts.encrypted(true);
    }
    if o & 16 != 0 {
        opts = opts.policy(Policy::Overwrite);
    }
    let (tail, head) = if o & 32 != 0 {
        let tail = (inp.u64() % (4 * CAP)) & !7;
        let head = inp.u64() % (tail + 1);
        (tail, head)
    } else {
        (CAP, 0)
    };
    let mut ring = inp.rest().to_vec();
    ring.resize(CAP as usize, 0);
    let sc = Scratch::new();
    drop(Stream::create_in(&sc.0, "s", &opts).expect("create"));
    let dir = sc.0.join("s");
    let mut meta = std::fs::read(dir.join("meta")).expect("meta");
    set_fixed_id(&mut meta);
    meta[meta::TAIL..meta::TAIL + 8].copy_from_slice(&tail.to_le_bytes());
    meta[meta::HEAD..meta::HEAD + 8].copy_from_slice(&head.to_le_bytes());
    std::fs::write(dir.join("meta"), &meta).expect("meta");
    std::fs::write(dir.join("data"), &ring).expect("data");
    exercise_stream(&sc.0, read_mode(o >> 6), true);
}

/// Give a meta image the stream id every ring made here has, so that
/// encrypted seeds decrypt (the id is part of the nonce).
fn set_fixed_id(meta: &mut [u8]) {
    meta[meta::STREAM_ID..meta::STREAM_ID + 16].copy_from_slice(&[9u8; 16]);
    fix_meta_crc(meta);
}

// ---- target: codec decoders -----------------------------------------------

/// The decoders on arbitrary input: lz4 and zstd with a bounded `max_len`,
/// XChaCha20-Poly1305 `open`, and compress/decompress round trips.
pub fn codec_decoders(data: &[u8]) {
    let mut inp = Input::new(data);
    let sel = inp.u8();
    let max_len = inp.u16() as usize * 4;
    let body = inp.rest();
    let mut out = Vec::new();
    match sel % 5 {
        0 | 1 => {
            let c = if sel.is_multiple_of(5) {
                Compression::Lz4
            } else {
                Compression::Zstd(3)
            };
            match codec::decompress(c, body, &mut out, max_len) {
                Ok(()) => {
                    assert!(out.len() <= max_len);
                    let declared = u32::from_le_bytes(body[..4].try_into().expect("prefix"));
                    assert_eq!(out.len(), declared as usize);
                }
                Err(e) => {
                    assert!(out.is_empty());
                    assert!(!e.to_string().contains('\n'));
                }
            }
            assert!(
                out.capacity() <= max_len.max(64) * 2 + 64,
                "unbounded allocation"
            );
        }
        2 => {
            let k = key();
            let mut id = [0u8; 16];
            id[..body.len().min(16)].copy_from_slice(&body[..body.len().min(16)]);
            let cipher = Cipher::new(&k, id);
            let pos = word_at(body, 16);
            let aad_len = body.get(24).copied().unwrap_or(0) as usize % 32;
            let rest = body.get(25..).unwrap_or(&[]);
            let (aad, ct) = rest.split_at(aad_len.min(rest.len()));
            let mut buf = ct.to_vec();
            let before = buf.clone();
            match cipher.open(pos, aad, &mut buf) {
                Ok(n) => assert_eq!(n + codec::TAG_LEN, buf.len()),
                // No plaintext is left behind: the message part is wiped,
                // the tag (and a buffer too short for one) unchanged.
                Err(ipcress::codec::OpenError) => {
                    let msg = buf.len().saturating_sub(codec::TAG_LEN);
                    assert!(buf[..msg].iter().all(|&b| b == 0), "plaintext left");
                    assert_eq!(buf[msg..], before[msg..], "failed open changed the tag");
                }
            }
            let _ = cipher.open_with(id, pos ^ 1, aad, &mut buf);
            // Sealing then opening the same bytes round-trips.
            let mut sealed = ct.to_vec();
            sealed.extend_from_slice(&[0u8; codec::TAG_LEN]);
            cipher.seal(pos, aad, &mut sealed);
            let n = cipher.open(pos, aad, &mut sealed).expect("own seal opens");
            assert_eq!(&sealed[..n], ct);
        }
        3 => {
            for c in [Compression::Lz4, Compression::Zstd(1)] {
                let mut packed = Vec::new();
                if codec::compress(c, body, &mut packed) {
                    assert!(packed.len() < body.len());
                    codec::decompress(c, &packed, &mut out, body.len()).expect("round trip");
                    assert_eq!(out, body);
                }
            }
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(body)
                && let Ok(c) = s.parse::<Compression>()
            {
                assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
                let (k, l) = c.to_code();
                assert_eq!(Compression::from_code(k, l), Some(c));
            }
            let k = word_at(body, 0);
            let _ = Compression::from_code(k as u32, (k >> 32) as i32);
        }
    }
}

// ---- the seed corpus --------------------------------------------------------

/// Deterministic pseudo-random numbers for the seed generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, v: &mut Vec<u8>, n: usize) {
    for _ in 0..n {
        if v.is_empty() {
            v.push(rng.next() as u8);
            continue;
        }
        let i = rng.below(v.len());
        match rng.below(4) {
            0 => v[i] ^= 1 << rng.below(8),
            1 => v[i] = rng.next() as u8,
            2 => {
                let j = rng.below(v.len());
                v.truncate(i.max(j).max(1));
            }
            _ => {
                let w = [0u8, 0xFF, 0x7F, 0x80][rng.below(4)];
                v[i] = w;
            }
        }
    }
}

/// Seeds for every target: inputs made from valid streams, plus mutations.
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);

    // frame_header: real headers at their positions, then segments.
    let ring = ring_seed_bytes(0);
    for i in 0..24u64 {
        let off = ((i * 8 * 37) % 4096) & !7;
        let mut v = Vec::new();
        let a = word_at(&ring, off);
        let b = word_at(&ring, off + 8);
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&b.to_le_bytes());
        v.extend_from_slice(&off.to_le_bytes());
        v.push(0); // 4 KiB segments
        v.push(1); // lap shift 13 (the 8 KiB ring)
        v.push(0);
        v.extend_from_slice(&ring[..4096]);
        if i >= 12 {
            mutate(&mut rng, &mut v, 1 + i as usize % 5);
        }
        out.push(("frame_header", format!("seed-{i:02}"), v));
    }
    for (i, w) in [
        (word_a(F_COMMITTED | F_PADDING | F_PAD8, 0), 0),
        (word_a(F_COMMITTED, 0), u32::MAX - 3),
        (word_a(F_COMMITTED | F_BEGIN | F_END | F_CHECKSUM, 0), 4080),
        (word_a(0xFFFF, 0), 10),
    ]
    .iter()
    .enumerate()
    {
        let (w, len) = *w;
        let mut v = w.to_le_bytes().to_vec();
        v.extend_from_slice(&word_b(len, pos_check(4088)).to_le_bytes());
        v.extend_from_slice(&4088u64.to_le_bytes());
        v.extend_from_slice(&[0, 0, 0]);
        out.push(("frame_header", format!("edge-{i}"), v));
    }

    // meta_file: raw images, truncated, patched.
    for log in [false, true] {
        let t = meta_template(log);
        let tag = if log { "log" } else { "ring" };
        let mode = if log { 2u8 } else { 0 };
        let mut raw = vec![mode];
        raw.extend_from_slice(&t.meta);
        out.push(("meta_file", format!("{tag}-valid"), raw.clone()));
        let mut short = raw.clone();
        short.truncate(3000);
        out.push(("meta_file", format!("{tag}-truncated"), short));
        for k in 0..3 {
            let mut m = raw.clone();
            mutate(&mut rng, &mut m, 3);
            m.resize(raw.len(), 0);
            m[0] = mode;
            out.push(("meta_file", format!("{tag}-mutated-{k}"), m));
        }
        // Patches with the checksum fixed: options and shared words.
        let patches: &[(usize, Vec<u8>)] = &[
            (meta::VERSION, 2u32.to_le_bytes().to_vec()),
            (meta::MAGIC, b"NOTMAGIC".to_vec()),
            (meta::LAYOUT, 3u32.to_le_bytes().to_vec()),
            (meta::SEGMENT_SHIFT, 31u32.to_le_bytes().to_vec()),
            (meta::SEGMENT_COUNT, 3u32.to_le_bytes().to_vec()),
            (meta::SEGMENT_COUNT, 65536u32.to_le_bytes().to_vec()),
            (meta::POLICY, 9u32.to_le_bytes().to_vec()),
            (meta::COMPRESSION, [2, 0, 0, 0, 99, 0, 0, 0].to_vec()),
            (meta::ENCRYPTION, 1u32.to_le_bytes().to_vec()),
            (meta::TAIL, u64::MAX.to_le_bytes().to_vec()),
            (meta::HEAD, (u64::MAX - 5).to_le_bytes().to_vec()),
            (meta::HEAD, (1u64 << 40).to_le_bytes().to_vec()),
            (meta::FRAG_LOCK, 77u64.to_le_bytes().to_vec()),
            (meta::REG_LOCK, 1u64.to_le_bytes().to_vec()),
            // Consumer slot 0 (the durable "c"): position, name length.
            (
                meta::CONSUMERS + cslot::POSITION,
                13u64.to_le_bytes().to_vec(),
            ),
            (
                meta::CONSUMERS + cslot::POSITION,
                (u64::MAX - 7).to_le_bytes().to_vec(),
            ),
            (
                meta::CONSUMERS + cslot::NAME_LEN,
                200u32.to_le_bytes().to_vec(),
            ),
            // Slot 1 (the group "g"): group word; slot 2 as a member.
            (
                meta::CONSUMERS + 256 + cslot::POSITION,
                u64::MAX.to_le_bytes().to_vec(),
            ),
            (
                meta::CONSUMERS + 512 + cslot::KIND,
                4u32.to_le_bytes().to_vec(),
            ),
            (
                meta::CONSUMERS + 512 + cslot::RUN_STATE,
                9u64.to_le_bytes().to_vec(),
            ),
            (
                meta::CONSUMERS + 512 + cslot::RUN_BEGIN,
                5u64.to_le_bytes().to_vec(),
            ),
            (
                format::PRODUCERS + pslot::CLAIM,
                17u64.to_le_bytes().to_vec(),
            ),
            (meta::UNBLOCK_TIMEOUT_MS, 1u64.to_le_bytes().to_vec()),
        ];
        for (k, (off, bytes)) in patches.iter().enumerate() {
            let mut v = vec![mode | 1 | 4 | ((k as u8 % 3) << 3)];
            v.extend_from_slice(&(*off as u16).to_le_bytes());
            v.push(bytes.len() as u8);
            v.extend_from_slice(bytes);
            out.push(("meta_file", format!("{tag}-patch-{k:02}"), v));
        }
    }

    // ring_data: real rings written with each option set, then mutations.
    for o in 0..16u8 {
        let opt = (o & 0x1F) | ((o % 3) << 6);
        let mut v = vec![opt];
        v.extend_from_slice(&ring_seed_bytes(opt));
        out.push(("ring_data", format!("valid-{opt:02x}"), v.clone()));
        let mut m = v.clone();
        mutate(&mut rng, &mut m, 4);
        m[0] = opt;
        out.push(("ring_data", format!("mutated-{opt:02x}"), m));
    }
    for k in 0..4u8 {
        let opt = 0x20 | (k % 3) << 6;
        let mut v = vec![opt];
        v.extend_from_slice(&(8192u64 * (k as u64 + 1) + 24).to_le_bytes());
        v.extend_from_slice(&(4096u64 * k as u64).to_le_bytes());
        v.extend_from_slice(&ring_seed_bytes(0));
        out.push(("ring_data", format!("tail-{k}"), v));
    }
    // A fragmented message cut after its first fragment.
    let mut cut = vec![0x40u8];
    let r = ring_seed_bytes(0x40);
    cut.extend_from_slice(&r);
    out.push(("ring_data", "cut-fragments".into(), cut_after_begin(cut)));

    // codec: real compressed and sealed records, then mutations.
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog. "
        .iter()
        .cycle()
        .take(2000)
        .copied()
        .collect();
    for (sel, c) in [(0u8, Compression::Lz4), (1u8, Compression::Zstd(3))] {
        let mut packed = Vec::new();
        assert!(codec::compress(c, &text, &mut packed));
        for k in 0..8 {
            let mut v = vec![sel];
            v.extend_from_slice(&(1000u16).to_le_bytes());
            let mut p = packed.clone();
            if k > 0 {
                mutate(&mut rng, &mut p, k);
            }
            v.extend_from_slice(&p);
            out.push(("codec", format!("{c}-{k}").replace(':', "_"), v));
        }
    }
    {
        let cipher = Cipher::new(&key(), [3u8; 16]);
        for k in 0..6 {
            let mut v = vec![2u8, 0, 0];
            v.extend_from_slice(&[3u8; 16]);
            v.extend_from_slice(&(4096u64 * k).to_le_bytes());
            v.push(14);
            let aad = [k as u8; 14];
            v.extend_from_slice(&aad);
            let mut buf = text[..100 + k as usize * 50].to_vec();
            buf.extend_from_slice(&[0u8; codec::TAG_LEN]);
            cipher.seal(4096 * k, &aad, &mut buf);
            if k >= 3 {
                mutate(&mut rng, &mut buf, 1);
            }
            v.extend_from_slice(&buf);
            out.push(("codec", format!("sealed-{k}"), v));
        }
    }
    for (k, s) in [
        "lz4",
        "zstd:22",
        "zstd:0",
        "ZSTD",
        "none",
        "zstd:-1",
        "zstd:99999999999",
    ]
    .iter()
    .enumerate()
    {
        let mut v = vec![4u8, 0, 0];
        v.extend_from_slice(s.as_bytes());
        out.push(("codec", format!("parse-{k}"), v));
    }
    for k in 0..4u8 {
        let mut v = vec![3u8, 0, 0];
        v.extend_from_slice(&text[..200 * (k as usize + 1)]);
        out.push(("codec", format!("roundtrip-{k}"), v));
    }
    out
}

/// The data file of a populated 2 x 4 KiB ring with options byte `opt`
/// (as in `ring_data`).
fn ring_seed_bytes(opt: u8) -> Vec<u8> {
    let sc = Scratch::new();
    let compression = match opt & 3 {
        1 => Compression::Lz4,
        2 => Compression::Zstd(1),
        _ => Compression::None,
    };
    let mut opts = StreamOptions::ring(8192)
        .segments(2)
        .compression(compression);
    if opt & 4 != 0 {
        opts = opts.checksum(Checksum::None);
    }
    if opt & 8 != 0 {
        opts = opts.encrypted(true);
    }
    if opt & 16 != 0 {
        opts = opts.policy(Policy::Overwrite);
    }
    drop(Stream::create_in(&sc.0, "s", &opts).expect("create"));
    let meta_path = sc.0.join("s").join("meta");
    let mut meta = std::fs::read(&meta_path).expect("meta");
    set_fixed_id(&mut meta);
    std::fs::write(&meta_path, &meta).expect("meta");
    let mut s = Stream::open_in(&sc.0, "s").expect("open");
    if opt & 8 != 0 {
        s = s.with_key(&key()).expect("key");
    }
    populate(&s);
    drop(s);
    std::fs::read(sc.0.join("s").join("data")).expect("data")
}

/// Zero everything after the first BEGIN-without-END frame of a ring image
/// (byte 0 of `v` is the options byte).
fn cut_after_begin(mut v: Vec<u8>) -> Vec<u8> {
    let ring = &v[1..];
    let mut off = 0u64;
    while off + 16 <= ring.len() as u64 {
        let w = split_a(word_at(ring, off));
        if w.flags & F_COMMITTED == 0 {
            break;
        }
        let total = if w.flags & F_PAD8 != 0 {
            8
        } else {
            frame_len(b_len(word_at(ring, off + 8)) as u64)
        };
        if w.flags & F_BEGIN != 0 && w.flags & F_END == 0 {
            let end = 1 + (off + total) as usize;
            v[end..].iter_mut().for_each(|x| *x = 0);
            return v;
        }
        off += total;
    }
    v
}

/// Write the seed corpus under `dir/<target>/`.
pub fn write_seed_corpus(dir: &Path) {
    for (target, name, bytes) in seed_corpus() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("corpus dir");
        std::fs::write(d.join(name), bytes).expect("write seed");
    }
}
