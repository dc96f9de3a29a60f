//! The ceiling: a bare single-producer single-consumer byte ring in a shared
//! file under /dev/shm, mapped by both processes. No headers, no framing, no
//! checksums: the producer copies bytes in and publishes its tail, the
//! consumer reads what lies between head and tail and publishes its head.
//!
//! Layout of the file:
//!
//! | offset | what                                                   |
//! |--------|--------------------------------------------------------|
//! | 0      | head: u64, bytes consumed (written by the consumer)    |
//! | 128    | tail: u64, bytes produced (written by the producer)    |
//! | 4096   | data: `capacity` bytes, a power of two                 |
//!
//! head and tail sit 128 bytes apart so that neither the cache line nor the
//! adjacent-line prefetcher couples them. Both grow forever; a byte at
//! position `p` lives at `data[p % capacity]`.
//!
//! This is the only module of the crate with `unsafe` code: shared words are
//! reached through `AtomicU64::from_ptr`, payload through raw copies.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, ensure};
use memmap2::MmapRaw;

use crate::spec::{Case, EndpointDesc, Wait};
use crate::transport::{Backoff, Channel, Endpoint, Rx, Tx};

const HEAD: usize = 0;
const TAIL: usize = 128;
const DATA: usize = 4096;

pub fn channel(case: &Case, dir: &Path, tag: &str, readers: usize) -> Result<Channel> {
    ensure!(readers == 1, "the bare ring has exactly one consumer");
    ensure!(
        case.ring_bytes.is_power_of_two(),
        "ring size must be a power of two"
    );
    let path = dir.join(format!("ring-{tag}"));
    let file = File::create_new(&path).with_context(|| format!("create {}", path.display()))?;
    file.set_len((DATA + case.ring_bytes) as u64)?;
    let name = path.to_str().context("non-UTF-8 temp path")?.to_owned();
    Ok(Channel {
        writer: Endpoint::named(name.clone(), 0),
        readers: vec![Endpoint::named(name, 0)],
    })
}

pub fn tx(case: &Case, desc: &EndpointDesc) -> Result<Box<dyn Tx>> {
    let ring = Ring::open(Path::new(&desc.name))?;
    let cached_head = ring.head().load(Ordering::Acquire);
    let tail = ring.tail().load(Ordering::Relaxed);
    Ok(Box::new(RingTx {
        ring,
        tail,
        cached_head,
        backoff: Backoff::new(case.wait),
    }))
}

pub fn rx(case: &Case, desc: &EndpointDesc) -> Result<Box<dyn Rx>> {
    let ring = Ring::open(Path::new(&desc.name))?;
    let head = ring.head().load(Ordering::Relaxed);
    let cached_tail = ring.tail().load(Ordering::Acquire);
    ensure!(case.wait != Wait::Block, "the bare ring only polls");
    Ok(Box::new(RingRx {
        ring,
        head,
        cached_tail,
        backoff: Backoff::new(case.wait),
    }))
}

struct Ring {
    map: MmapRaw,
    capacity: usize,
    _path: PathBuf,
}

impl Ring {
    fn open(path: &Path) -> Result<Ring> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let map = MmapRaw::map_raw(&file)?;
        ensure!(map.len() > DATA, "ring file too small");
        let capacity = map.len() - DATA;
        ensure!(
            capacity.is_power_of_two(),
            "ring capacity {capacity} is not a power of two"
        );
        Ok(Ring {
            map,
            capacity,
            _path: path.to_owned(),
        })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= DATA && offset.is_multiple_of(8));
        // SAFETY: the mapping is page-aligned and longer than DATA, so
        // `offset` (8-aligned, below DATA) names 8 valid, aligned bytes that
        // live as long as `self.map`. Every process only ever touches these
        // words atomically, which is what `from_ptr` requires.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    fn head(&self) -> &AtomicU64 {
        self.word(HEAD)
    }

    fn tail(&self) -> &AtomicU64 {
        self.word(TAIL)
    }

    /// Start of the contiguous run at position `pos`, and its length up to the
    /// end of the data area.
    fn run(&self, pos: u64) -> (*mut u8, usize) {
        let off = (pos as usize) & (self.capacity - 1);
        // SAFETY: `off < capacity` and the mapping is DATA + capacity long.
        let ptr = unsafe { self.map.as_mut_ptr().add(DATA + off) };
        (ptr, self.capacity - off)
    }
}

struct RingTx {
    ring: Ring,
    tail: u64,
    cached_head: u64,
    backoff: Backoff,
}

impl Tx for RingTx {
    fn send(&mut self, mut msg: &[u8]) -> Result<()> {
        let cap = self.ring.capacity as u64;
        while !msg.is_empty() {
            let mut free = cap - (self.tail - self.cached_head);
            if free == 0 {
                // Publish what is written so far: a message larger than the
                // free space goes through in pieces.
                self.ring.tail().store(self.tail, Ordering::Release);
                self.cached_head = self.ring.head().load(Ordering::Acquire);
                free = cap - (self.tail - self.cached_head);
                if free == 0 {
                    self.backoff.snooze();
                    continue;
                }
                self.backoff.reset();
            }
            let (dst, run) = self.ring.run(self.tail);
            let n = msg.len().min(free as usize).min(run);
            debug_assert!(n > 0 && n <= run);
            // SAFETY: `dst..dst + n` lies inside the data area (n <= run), and
            // those bytes are free: they sit between the tail and head +
            // capacity, which the consumer does not read until the tail is
            // published past them. `msg` is private memory, so no overlap.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), dst, n) };
            self.tail += n as u64;
            msg = &msg[n..];
        }
        self.ring.tail().store(self.tail, Ordering::Release);
        Ok(())
    }
}

struct RingRx {
    ring: Ring,
    head: u64,
    cached_tail: u64,
    backoff: Backoff,
}

impl Rx for RingRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        while self.cached_tail == self.head {
            self.cached_tail = self.ring.tail().load(Ordering::Acquire);
            if self.cached_tail == self.head {
                self.backoff.snooze();
            }
        }
        self.backoff.reset();
        let (src, run) = self.ring.run(self.head);
        let n = ((self.cached_tail - self.head) as usize).min(run);
        debug_assert!(n > 0 && n <= run);
        // SAFETY: `src..src + n` lies inside the data area (n <= run). The
        // producer published these bytes with a release store of the tail we
        // loaded with acquire, and does not write them again until the head
        // passes them, which happens only below, after the slice is gone.
        let bytes = unsafe { std::slice::from_raw_parts(src.cast_const(), n) };
        f(bytes);
        self.head += n as u64;
        self.ring.head().store(self.head, Ordering::Release);
        Ok(n)
    }
}
