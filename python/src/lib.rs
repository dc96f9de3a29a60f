//! `ipcress._ipcress`: the Python binding of the ipcress library (PyO3).
//!
//! The Python package `ipcress` (python/ipcress/__init__.py) re-exports
//! these classes. How a message or a reservation, which borrow their
//! consumer or producer in Rust, live in Python is explained in
//! docs/PYTHON.md, "Lending"; the invariants are restated where the
//! `unsafe` blocks rely on them.

use std::ffi::c_int;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyBufferError, PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::{create_exception, ffi};

mod errors;
use errors::to_py;

/// How long a blocking call waits with the GIL released before it looks at
/// pending signals (Ctrl-C) again.
const SLICE: Duration = Duration::from_millis(50);

// ---- ownership helpers ------------------------------------------------

/// A value reachable only through `&mut Exclusive<T>`: it may be `Sync`
/// whatever `T` is, because a shared reference to it gives no access at
/// all (the same argument as `std::sync::Exclusive`).
struct Exclusive<T>(T);

// SAFETY: `Exclusive` exposes its content only through `&mut self`, so two
// threads never reach the `T` through shared references at the same time.
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    fn get(&mut self) -> &mut T {
        &mut self.0
    }
}

/// A heap value owned through a raw pointer, so that a value borrowing it
/// (`Message<'static>`, `Grant<'static>`) can sit beside it in the same
/// struct. Freed on drop.
struct Owned<T>(NonNull<T>);

// SAFETY: `Owned<T>` owns its `T` exactly like a `Box<T>`.
unsafe impl<T: Send> Send for Owned<T> {}

impl<T> Owned<T> {
    fn new(t: T) -> Self {
        Owned(NonNull::from(Box::leak(Box::new(t))))
    }

    /// The value, for a borrow that outlives `&mut self`.
    ///
    /// # Safety
    ///
    /// The caller keeps the returned reference, and anything borrowing
    /// from it, from overlapping with any other reference to the value
    /// and drops them before the `Owned` itself.
    unsafe fn lend<'a>(&mut self) -> &'a mut T {
        // SAFETY: the pointer came from `Box::leak` and stays valid until
        // `drop`; uniqueness is the caller's contract.
        unsafe { &mut *self.0.as_ptr() }
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` and is freed only here;
        // every loan ended before (the holders drop them first).
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

fn closed() -> PyErr {
    PyValueError::new_err("I/O operation on a closed ipcress object")
}

create_exception!(
    ipcress,
    Error,
    PyException,
    "Base class of every error of the ipcress library."
);

// ---- Ctrl-C for blocking producers ------------------------------------

/// Flags of producers blocked in `send` or `reserve`. A ticker thread sets
/// them every `SLICE`, so that the library's wait returns
/// `Error::Interrupted` (nothing claimed, nothing written) and the binding
/// can look for signals with the GIL held, then wait again.
fn blocked() -> &'static Mutex<Vec<Weak<AtomicBool>>> {
    static BLOCKED: OnceLock<Mutex<Vec<Weak<AtomicBool>>>> = OnceLock::new();
    BLOCKED.get_or_init(|| {
        std::thread::Builder::new()
            .name("ipcress-ticker".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(SLICE);
                    let mut v = blocked().lock().unwrap_or_else(|e| e.into_inner());
                    v.retain(|w| match w.upgrade() {
                        Some(f) => {
                            f.store(true, Ordering::Relaxed);
                            true
                        }
                        None => false,
                    });
                }
            })
            .ok();
        Mutex::new(Vec::new())
    })
}

/// Registers a producer's flag as blocked while alive.
struct Blocking(Arc<AtomicBool>);

impl Blocking {
    fn new(flag: &Arc<AtomicBool>) -> Blocking {
        flag.store(false, Ordering::Relaxed);
        blocked()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(flag));
        Blocking(flag.clone())
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        let mut v = blocked().lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|w| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.0)));
        drop(v);
        // A tick that came after the wait ended must not interrupt a later
        // call (a writer's fragments, which cannot be retried).
        self.0.store(false, Ordering::Relaxed);
    }
}

// ---- options ----------------------------------------------------------

fn parse_start(v: Option<&Bound<'_, PyAny>>) -> PyResult<ipcress::StartAt> {
    let Some(v) = v else {
        return Ok(ipcress::StartAt::Start);
    };
    if let Ok(p) = v.extract::<u64>() {
        return Ok(ipcress::StartAt::Position(p));
    }
    match v.extract::<String>()?.as_str() {
        "start" => Ok(ipcress::StartAt::Start),
        "end" => Ok(ipcress::StartAt::End),
        s => Err(PyValueError::new_err(format!(
            "start must be 'start', 'end' or a position, not {s:?}"
        ))),
    }
}

fn root_of(root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(ipcress::default_root)
}

fn load_key(key_file: Option<PathBuf>) -> PyResult<Option<ipcress::Key>> {
    key_file
        .map(|p| ipcress::Key::load(&p).map_err(|e| to_py(ipcress::Error::Key(e))))
        .transpose()
}

fn layout_name(l: ipcress::Layout) -> &'static str {
    l.as_str()
}

// ---- Stream -----------------------------------------------------------

/// A stream: a named directory of memory-mapped files.
#[pyclass(module = "ipcress", frozen)]
struct Stream {
    s: ipcress::Stream,
    root: PathBuf,
}

#[pymethods]
impl Stream {
    /// Create a stream (see `ipcress create --help` for the options).
    #[staticmethod]
    #[pyo3(signature = (name, *, root=None, log=false, size=None, segment_size=None,
        segments=None, retain_bytes=None, retain_age=None, policy="block",
        checksum="crc32c", compression="none", key_file=None, mode=None,
        durable_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        name: &str,
        root: Option<PathBuf>,
        log: bool,
        size: Option<u64>,
        segment_size: Option<u64>,
        segments: Option<u32>,
        retain_bytes: Option<u64>,
        retain_age: Option<f64>,
        policy: &str,
        checksum: &str,
        compression: &str,
        key_file: Option<PathBuf>,
        mode: Option<u32>,
        durable_timeout: Option<f64>,
    ) -> PyResult<Stream> {
        let secs = |what: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .map_err(|_| PyValueError::new_err(format!("{what} must be >= 0 seconds")))
        };
        let mut o = if log {
            if size.is_some() || segments.is_some() {
                return Err(PyValueError::new_err(
                    "size and segments are ring options; a log takes segment_size",
                ));
            }
            let mut o = ipcress::StreamOptions::log(segment_size.unwrap_or(64 << 20));
            if let Some(n) = retain_bytes {
                o = o.retain_bytes(n);
            }
            if let Some(a) = retain_age {
                o = o.retain_age(secs("retain_age", a)?);
            }
            o
        } else {
            if segment_size.is_some() || retain_bytes.is_some() || retain_age.is_some() {
                return Err(PyValueError::new_err(
                    "segment_size and retention are log options (log=True)",
                ));
            }
            let mut o = ipcress::StreamOptions::ring(size.unwrap_or(64 << 20));
            if let Some(n) = segments {
                o = o.segments(n);
            }
            o
        };
        o = o
            .policy(match policy {
                "block" => ipcress::Policy::Block,
                "overwrite" => ipcress::Policy::Overwrite,
                p => {
                    return Err(PyValueError::new_err(format!(
                        "policy must be 'block' or 'overwrite', not {p:?}"
                    )));
                }
            })
            .checksum(match checksum {
                "crc32c" => ipcress::Checksum::Crc32c,
                "none" => ipcress::Checksum::None,
                c => {
                    return Err(PyValueError::new_err(format!(
                        "checksum must be 'crc32c' or 'none', not {c:?}"
                    )));
                }
            })
            .compression(
                compression
                    .parse::<ipcress::Compression>()
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            );
        let key = load_key(key_file)?;
        if key.is_some() {
            o = o.encrypted(true);
        }
        if let Some(m) = mode {
            o = o.mode(m);
        }
        if let Some(d) = durable_timeout {
            o = o.durable_timeout(secs("durable_timeout", d)?);
        }
        let root = root_of(root);
        let s = py
            .detach(|| {
                let s = ipcress::Stream::create_in(&root, name, &o)?;
                match &key {
                    Some(k) => s.with_key(k),
                    None => Ok(s),
                }
            })
            .map_err(to_py)?;
        Ok(Stream { s, root })
    }

    /// Open an existing stream; `key_file` for an encrypted one.
    #[staticmethod]
    #[pyo3(signature = (name, *, root=None, key_file=None))]
    fn open(
        py: Python<'_>,
        name: &str,
        root: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> PyResult<Stream> {
        let key = load_key(key_file)?;
        let root = root_of(root);
        let s = py
            .detach(|| {
                let s = ipcress::Stream::open_in(&root, name)?;
                match &key {
                    Some(k) => s.with_key(k),
                    None => Ok(s),
                }
            })
            .map_err(to_py)?;
        Ok(Stream { s, root })
    }

    /// Remove a stream and its files (refused while a process uses it).
    #[staticmethod]
    #[pyo3(signature = (name, *, root=None))]
    fn remove(py: Python<'_>, name: &str, root: Option<PathBuf>) -> PyResult<()> {
        let root = root_of(root);
        py.detach(|| ipcress::Stream::remove_in(&root, name))
            .map_err(to_py)
    }

    /// Names of the streams under `root`.
    #[staticmethod]
    #[pyo3(signature = (*, root=None))]
    fn list(root: Option<PathBuf>) -> PyResult<Vec<String>> {
        ipcress::Stream::list_in(&root_of(root)).map_err(to_py)
    }

    /// The stream's name.
    #[getter]
    fn name(&self) -> &str {
        self.s.name()
    }

    /// The directory holding the stream's files.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.s.dir().to_path_buf()
    }

    /// The root directory the stream lives under.
    #[getter]
    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    /// "ring" or "log".
    #[getter]
    fn layout(&self) -> &'static str {
        layout_name(self.s.layout())
    }

    /// Position of the oldest retained record.
    #[getter]
    fn head(&self) -> u64 {
        self.s.head()
    }

    /// Position the next record will get.
    #[getter]
    fn tail(&self) -> u64 {
        self.s.tail()
    }

    /// Capacity of a ring in bytes (None for a log).
    #[getter]
    fn capacity(&self) -> Option<u64> {
        self.s.capacity()
    }

    /// Largest message `send` and `reserve` accept (larger: `writer()`).
    #[getter]
    fn max_message_len(&self) -> usize {
        self.s.max_message_len()
    }

    /// Whether records are encrypted.
    #[getter]
    fn encrypted(&self) -> bool {
        self.s.encrypted()
    }

    /// A new producer.
    fn producer(&self, py: Python<'_>) -> PyResult<Producer> {
        let mut p = py.detach(|| self.s.producer()).map_err(to_py)?;
        let flag = Arc::new(AtomicBool::new(false));
        p.interrupt_on(flag.clone());
        Ok(Producer {
            st: Exclusive(ProducerState {
                lent: None,
                exports: Arc::default(),
                seq: 0,
                max_message_len: p.max_message_len(),
                producer: Some(Owned::new(p)),
                flag,
            }),
        })
    }

    /// The durable consumer `name` (made at `start` if new; its saved
    /// position otherwise).
    #[pyo3(signature = (name, *, start=None))]
    fn consumer(
        &self,
        py: Python<'_>,
        name: &str,
        start: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Consumer> {
        let from = parse_start(start)?;
        let c = py
            .detach(|| self.s.consumer_from(name, from))
            .map_err(to_py)?;
        Ok(Consumer::new(c, &self.s))
    }

    /// An ephemeral subscriber (gone when closed), from `start`.
    #[pyo3(signature = (*, start=None))]
    fn subscribe(&self, py: Python<'_>, start: Option<&Bound<'_, PyAny>>) -> PyResult<Consumer> {
        let from = parse_start(start)?;
        let c = py.detach(|| self.s.subscribe(from)).map_err(to_py)?;
        Ok(Consumer::new(c, &self.s))
    }

    /// A member of group `name`: each record goes to one member.
    #[pyo3(signature = (name, *, start=None))]
    fn group(
        &self,
        py: Python<'_>,
        name: &str,
        start: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Consumer> {
        let from = parse_start(start)?;
        let c = py.detach(|| self.s.group_from(name, from)).map_err(to_py)?;
        Ok(Consumer::new(c, &self.s))
    }

    /// Remove a durable consumer or group of the stream.
    fn remove_consumer(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        py.detach(|| self.s.remove_consumer(name)).map_err(to_py)
    }

    /// The stream's options, positions and consumers, as a dict.
    fn stat<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let s = &self.s;
        let tail = s.tail();
        d.set_item("name", s.name())?;
        d.set_item("dir", s.dir())?;
        d.set_item("layout", layout_name(s.layout()))?;
        d.set_item("capacity", s.capacity())?;
        d.set_item("segment_size", s.segment_size())?;
        d.set_item("policy", s.policy().as_str())?;
        d.set_item("checksum", s.checksum().as_str())?;
        d.set_item("compression", s.compression().to_string())?;
        d.set_item("encrypted", s.encrypted())?;
        d.set_item("head", s.head())?;
        d.set_item("tail", tail)?;
        let (messages, bytes, producers) = s.producer_totals();
        d.set_item("produced_messages", messages)?;
        d.set_item("produced_bytes", bytes)?;
        d.set_item("producers", producers)?;
        let cs = PyList::empty(py);
        for c in s.consumers() {
            let e = PyDict::new(py);
            e.set_item("name", &c.name)?;
            e.set_item("kind", c.kind)?;
            e.set_item("position", c.position)?;
            e.set_item("lag", tail.saturating_sub(c.position))?;
            e.set_item("pid", c.pid)?;
            e.set_item("alive", c.alive)?;
            e.set_item("messages", c.messages)?;
            e.set_item("heartbeat_ms", c.heartbeat_ms)?;
            cs.append(e)?;
        }
        d.set_item("consumers", cs)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "<ipcress.Stream {:?} {} at {}>",
            self.s.name(),
            layout_name(self.s.layout()),
            self.s.dir().display()
        )
    }
}

// ---- Producer ---------------------------------------------------------

/// A grant's commit, with the grant inside (dropping it aborts the grant).
type Commit = Box<dyn FnOnce() -> ipcress::Result<u64> + Send>;

/// What a writer can be asked to do.
enum WriterOp<'b> {
    Write(&'b [u8]),
    Finish,
}

/// A message writer, inside the closure that drives it (dropping it
/// closes the message as aborted).
type Drive = Box<dyn for<'b> FnMut(WriterOp<'b>) -> std::io::Result<Option<u64>> + Send>;

/// What a producer has lent out: one reservation or one writer at a time.
/// The library's `Grant` and `MessageWriter`, which borrow the producer,
/// are held inside closures, so that this binding names neither type.
enum Lent {
    Grant {
        commit: Commit,
        /// The grant's space: fixed while the grant lives (a claimed frame
        /// in the mapping, or the grant's own staging buffer on the heap).
        ptr: *mut u8,
        len: usize,
        position: Option<u64>,
    },
    Writer(Drive),
}

// SAFETY: `ptr` is the address of memory owned by the grant held in
// `commit` (which is `Send`); it is only dereferenced by the thread that
// holds `&mut ProducerState`.
unsafe impl Send for Lent {}

struct ProducerState {
    /// Declared before `producer`: dropped first (a grant is aborted, a
    /// writer closes its message as aborted) while the producer lives.
    lent: Option<Lent>,
    /// Buffers exported from the current grant and not yet released
    /// (shared with the `Reservation`, whose `__releasebuffer__` must
    /// count down without borrowing anything).
    exports: Arc<AtomicUsize>,
    /// Number of the current loan, so that a stale `Reservation` or
    /// `Writer` object is refused.
    seq: u64,
    /// None once closed.
    producer: Option<Owned<ipcress::Producer>>,
    flag: Arc<AtomicBool>,
    /// Read once (the producer may be lent).
    max_message_len: usize,
}

impl ProducerState {
    /// Give the producer back from a finished or abandoned loan.
    fn end_loan(&mut self) -> PyResult<()> {
        let n = self.exports.load(Ordering::Acquire);
        if n > 0 {
            return Err(exported(n, "reservation"));
        }
        self.lent = None;
        Ok(())
    }

    /// The producer for a new call: no loan may be outstanding.
    fn free(&mut self) -> PyResult<&mut Owned<ipcress::Producer>> {
        if self.lent.is_some() {
            return Err(PyBufferError::new_err(
                "the producer has an open reservation or writer: commit, abort or close it first",
            ));
        }
        self.producer.as_mut().ok_or_else(closed)
    }
}

fn exported(n: usize, what: &str) -> PyErr {
    PyBufferError::new_err(format!(
        "the {what} is still exported by {n} buffer(s) (a memoryview or numpy array): \
         delete or release them first"
    ))
}

/// Run a producer's blocking call with the GIL released, waking for
/// signals every `SLICE` (`Error::Interrupted` means nothing was claimed).
fn blocking<T: Send>(
    py: Python<'_>,
    flag: &Arc<AtomicBool>,
    mut f: impl FnMut() -> ipcress::Result<T> + Send,
) -> PyResult<T> {
    loop {
        let r = py.detach(|| {
            let _b = Blocking::new(flag);
            f()
        });
        match r {
            Err(ipcress::Error::Interrupted) => py.check_signals()?,
            r => return r.map_err(to_py),
        }
    }
}

/// Appends records to a stream.
#[pyclass(module = "ipcress")]
struct Producer {
    st: Exclusive<ProducerState>,
}

#[pymethods]
impl Producer {
    /// Append one message (any bytes-like object); waits for space under
    /// the block policy. Returns the record's position.
    fn send(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<u64> {
        let st = self.st.get();
        let flag = st.flag.clone();
        let p = st.free()?;
        // SAFETY: no loan is outstanding (`free`), and this borrow ends
        // with the call.
        let p = unsafe { p.lend() };
        match p.try_send(data) {
            Err(ipcress::Error::Full) => blocking(py, &flag, || p.send(data)),
            r => r.map_err(to_py),
        }
    }

    /// Append one message or raise `FullError` at once if the ring is full.
    fn try_send(&mut self, data: &[u8]) -> PyResult<u64> {
        let p = self.st.get().free()?;
        // SAFETY: no loan is outstanding (`free`); the borrow ends here.
        unsafe { p.lend() }.try_send(data).map_err(to_py)
    }

    /// Claim `n` bytes in shared memory to fill in place.
    fn reserve(slf: &Bound<'_, Self>, n: usize) -> PyResult<Reservation> {
        let py = slf.py();
        let mut me = slf.borrow_mut();
        let st = me.st.get();
        let flag = st.flag.clone();
        let p = st.free()?;
        // SAFETY: no loan is outstanding (`free`). The grant borrows the
        // producer until it is committed, aborted or dropped; meanwhile
        // `lent` is Some and every other use of the producer is refused
        // (`free`), and `lent` is dropped before the producer (field order;
        // `close` drops it first too).
        let p = unsafe { p.lend() };
        let mut g = blocking(py, &flag, || {
            // SAFETY: each attempt reborrows the same unique producer; a
            // failed attempt's borrow has ended before the next.
            let p: &'static mut ipcress::Producer = unsafe { &mut *(p as *mut _) };
            p.reserve(n)
        })?;
        let (ptr, len, position) = (g.as_mut_ptr(), g.len(), g.position());
        st.seq += 1;
        st.lent = Some(Lent::Grant {
            commit: Box::new(move || g.commit()),
            ptr,
            len,
            position,
        });
        Ok(Reservation {
            producer: slf.clone().unbind(),
            seq: st.seq,
            exports: st.exports.clone(),
            view: Mutex::new(None),
        })
    }

    /// A writer for one message of any size, streamed in fragments
    /// (low-level; `ipcress.Producer.writer()` wraps it as a file).
    fn _writer(slf: &Bound<'_, Self>) -> PyResult<RawWriter> {
        let py = slf.py();
        let mut me = slf.borrow_mut();
        let st = me.st.get();
        let p = st.free()?;
        // SAFETY: as in `reserve`: the writer's loan is tracked in `lent`.
        let p = unsafe { p.lend() };
        let w = py.detach(|| p.writer()).map_err(to_py)?;
        let mut w = Some(w);
        let drive: Drive = Box::new(move |op| match (op, &mut w) {
            (WriterOp::Write(d), Some(w)) => std::io::Write::write_all(w, d).map(|()| None),
            (WriterOp::Finish, w) => match w.take() {
                Some(w) => w.finish().map(Some).map_err(std::io::Error::other),
                None => Ok(None),
            },
            (WriterOp::Write(_), None) => Ok(None),
        });
        st.seq += 1;
        st.lent = Some(Lent::Writer(drive));
        Ok(RawWriter {
            producer: slf.clone().unbind(),
            seq: st.seq,
        })
    }

    /// Largest message `send` and `reserve` accept.
    #[getter]
    fn max_message_len(&mut self) -> PyResult<usize> {
        let st = self.st.get();
        st.producer.as_ref().ok_or_else(closed)?;
        Ok(st.max_message_len)
    }

    /// Close the producer (an open reservation is aborted).
    fn close(&mut self) -> PyResult<()> {
        let st = self.st.get();
        st.end_loan()?;
        st.producer = None;
        Ok(())
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&mut self) -> bool {
        self.st.get().producer.is_none()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &mut self,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }
}

/// Space claimed in shared memory; a writable buffer until committed.
#[pyclass(module = "ipcress", frozen)]
struct Reservation {
    producer: Py<Producer>,
    seq: u64,
    exports: Arc<AtomicUsize>,
    /// The memoryview handed out by `__enter__`, released by `__exit__`.
    view: Mutex<Option<Py<PyAny>>>,
}

/// The producer state of a live loan `seq`, or an error.
fn loan<'a>(p: &'a mut PyRefMut<'_, Producer>, seq: u64) -> PyResult<&'a mut ProducerState> {
    let st = p.st.get();
    if st.seq != seq || st.lent.is_none() {
        return Err(PyValueError::new_err(
            "this reservation or writer is finished (committed, aborted or closed)",
        ));
    }
    Ok(st)
}

#[pymethods]
impl Reservation {
    /// Publish the record; returns its position.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        self.release_view(py)?;
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        let st = loan(&mut p, self.seq)?;
        let n = st.exports.load(Ordering::Acquire);
        if n > 0 {
            return Err(exported(n, "reservation"));
        }
        match st.lent.take() {
            Some(Lent::Grant { commit, .. }) => py.detach(commit).map_err(to_py),
            other => {
                st.lent = other;
                Err(PyValueError::new_err("not a reservation"))
            }
        }
    }

    /// Give the space up: readers skip the record.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.release_view(py)?;
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        let st = loan(&mut p, self.seq)?;
        st.end_loan()
    }

    /// Position the record will have (None with compression: the record
    /// is placed at commit).
    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        match &loan(&mut p, self.seq)?.lent {
            Some(Lent::Grant { position, .. }) => Ok(*position),
            _ => Ok(None),
        }
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        match &loan(&mut p, self.seq)?.lent {
            Some(Lent::Grant { len, .. }) => Ok(*len),
            _ => Ok(0),
        }
    }

    /// A writable memoryview of the space, released on exit; commits on
    /// success, aborts on an exception.
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let mv = py
            .import("builtins")?
            .getattr("memoryview")?
            .call1((slf,))?
            .unbind();
        *slf.get().view.lock().unwrap_or_else(|e| e.into_inner()) = Some(mv.clone_ref(py));
        Ok(mv)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if t.is_some() {
            self.abort(py)?;
        } else {
            self.commit(py)?;
        }
        Ok(false)
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let mut p = me.producer.bind(py).try_borrow_mut()?;
        let st = loan(&mut p, me.seq)?;
        let Some(Lent::Grant { ptr, len, .. }) = st.lent else {
            return Err(PyValueError::new_err("not a reservation"));
        };
        // SAFETY: `view` is the caller's Py_buffer; `ptr..ptr+len` is the
        // grant's space, which stays claimed and mapped while `exports` is
        // above zero (commit, abort, close and drop refuse or wait until
        // every export is released). A new reference to `slf` is stored
        // in the view (`obj`), keeping this reservation, and so its
        // producer, alive.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr.cast(), len as isize, 0, flags)
        };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
        st.exports.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    unsafe fn __releasebuffer__(slf: Bound<'_, Self>, _view: *mut ffi::Py_buffer) {
        slf.get().exports.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Reservation {
    fn release_view(&self, py: Python<'_>) -> PyResult<()> {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(v) = v {
            v.call_method0(py, "release")?;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // An unfinished reservation dropped by Python is aborted, unless a
        // buffer still points into it (it cannot be: every export holds a
        // reference to this object).
        Python::attach(|py| {
            if let Ok(mut p) = self.producer.bind(py).try_borrow_mut() {
                let st = p.st.get();
                if st.seq == self.seq && st.exports.load(Ordering::Acquire) == 0 {
                    st.lent = None;
                }
            }
        });
    }
}

/// The library's error inside an `io::Error` (a writer's), or the I/O error.
fn io_to_py(e: std::io::Error) -> PyErr {
    match e.downcast::<ipcress::Error>() {
        Ok(e) => to_py(e),
        Err(e) => to_py(ipcress::Error::Io {
            context: "write message".into(),
            source: e,
        }),
    }
}

/// One message written in fragments (wrapped by `ipcress.Writer`).
#[pyclass(module = "ipcress")]
struct RawWriter {
    producer: Py<Producer>,
    seq: u64,
}

#[pymethods]
impl RawWriter {
    /// Append bytes to the message; returns how many were taken.
    fn write(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<usize> {
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        let st = loan(&mut p, self.seq)?;
        let Some(Lent::Writer(w)) = &mut st.lent else {
            return Err(PyValueError::new_err("not a writer"));
        };
        py.detach(|| w(WriterOp::Write(data))).map_err(io_to_py)?;
        Ok(data.len())
    }

    /// Write the last fragment; returns the message's position.
    fn finish(&mut self, py: Python<'_>) -> PyResult<u64> {
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        let st = loan(&mut p, self.seq)?;
        match st.lent.take() {
            Some(Lent::Writer(mut w)) => match py.detach(|| w(WriterOp::Finish)) {
                Ok(Some(position)) => Ok(position),
                Ok(None) => Err(PyValueError::new_err("the writer is finished")),
                Err(e) => Err(io_to_py(e)),
            },
            other => {
                st.lent = other;
                Err(PyValueError::new_err("not a writer"))
            }
        }
    }

    /// Close the message as aborted: readers skip it.
    fn abort(&mut self, py: Python<'_>) -> PyResult<()> {
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        let st = loan(&mut p, self.seq)?;
        st.end_loan()
    }

    /// Whether the writer is finished or aborted.
    #[getter]
    fn done(&self, py: Python<'_>) -> PyResult<bool> {
        let mut p = self.producer.bind(py).try_borrow_mut()?;
        Ok(loan(&mut p, self.seq).is_err())
    }
}

// ---- Consumer and Message ---------------------------------------------

/// What a consumer has lent to its current `Message`.
enum Held {
    /// A message that fits one frame: its bytes are the library's
    /// (borrowed from the mapping, or the consumer's decode buffer).
    Msg(ipcress::Message<'static>),
    /// A fragmented message, reassembled (the consumer is free again).
    Copy {
        position: u64,
        time: Option<SystemTime>,
        data: Vec<u8>,
    },
}

struct ConsumerState {
    /// Declared before `consumer`: dropped first.
    held: Option<Held>,
    /// Buffers exported from the current message and not yet released
    /// (shared with the `Message`, as for a producer).
    exports: Arc<AtomicUsize>,
    /// Number of the current message.
    seq: u64,
    /// None once closed.
    consumer: Option<Owned<ipcress::Consumer>>,
    /// The consumer's name, read once (the consumer may be lent).
    name: String,
}

impl ConsumerState {
    /// Release the current message (refused while a buffer of it lives).
    fn release(&mut self) -> PyResult<()> {
        let n = self.exports.load(Ordering::Acquire);
        if n > 0 {
            return Err(exported(n, "message"));
        }
        self.held = None;
        Ok(())
    }

    /// The consumer for a new call, after releasing the current message.
    fn free(&mut self) -> PyResult<&mut Owned<ipcress::Consumer>> {
        self.release()?;
        self.consumer.as_mut().ok_or_else(closed)
    }
}

/// Reads a stream: a durable consumer, a subscriber or a group member.
#[pyclass(module = "ipcress")]
struct Consumer {
    st: Exclusive<ConsumerState>,
    /// For `lag`.
    stream: ipcress::Stream,
}

impl Consumer {
    fn new(c: ipcress::Consumer, stream: &ipcress::Stream) -> Consumer {
        Consumer {
            stream: stream.clone(),
            st: Exclusive(ConsumerState {
                held: None,
                exports: Arc::default(),
                seq: 0,
                name: c.name().to_string(),
                consumer: Some(Owned::new(c)),
            }),
        }
    }

    /// Wait for a message until `deadline` (None: forever), the GIL
    /// released, looking for signals every `SLICE`.
    fn next(
        slf: &Bound<'_, Self>,
        deadline: Option<Instant>,
        wait: bool,
    ) -> PyResult<Option<Message>> {
        let py = slf.py();
        let mut me = slf.try_borrow_mut()?;
        let st = me.st.get();
        let c = st.free()?;
        // SAFETY: the current message was released (`free`), so nothing
        // borrows the consumer. The message returned borrows it until it
        // is released; it is kept in `held`, every other use of the
        // consumer first drops it (`free`, refused while exported), and
        // `held` is dropped before the consumer.
        let c: *mut ipcress::Consumer = unsafe { c.lend() };
        let got = {
            // SAFETY: as above; this borrow ends before the next one.
            let first = unsafe { &mut *c }.try_recv().map_err(to_py)?;
            match first {
                Some(m) => Some(m),
                None if !wait => None,
                None => loop {
                    let slice = match deadline {
                        None => SLICE,
                        Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                    };
                    // SAFETY: as above: one borrow per attempt.
                    let cr = unsafe { &mut *c };
                    let r = py.detach(move || cr.recv_timeout(slice));
                    match r.map_err(to_py)? {
                        Some(m) => break Some(m),
                        None => {
                            py.check_signals()?;
                            if deadline.is_some_and(|d| Instant::now() >= d) {
                                break None;
                            }
                        }
                    }
                },
            }
        };
        let Some(m) = got else {
            return Ok(None);
        };
        let held = if m.is_fragmented() {
            let position = m.position();
            let time = m.time();
            let data = py.detach(|| m.to_vec()).map_err(to_py)?;
            Held::Copy {
                position,
                time,
                data,
            }
        } else {
            Held::Msg(m)
        };
        st.seq += 1;
        st.held = Some(held);
        Ok(Some(Message {
            consumer: slf.clone().unbind(),
            seq: st.seq,
            exports: st.exports.clone(),
        }))
    }

    fn with_consumer<T>(&mut self, f: impl FnOnce(&mut ipcress::Consumer) -> T) -> PyResult<T> {
        let c = self.st.get().free()?;
        // SAFETY: the current message was released (`free`): this is the
        // only borrow, and it ends with the call.
        Ok(f(unsafe { c.lend() }))
    }
}

#[pymethods]
impl Consumer {
    /// Wait for the next message, at most `timeout` seconds (None: without
    /// limit); returns None on timeout. Releases the previous message.
    #[pyo3(signature = (timeout=None))]
    fn recv(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Option<Message>> {
        let deadline = match timeout {
            None => None,
            Some(t) => Some(
                Instant::now()
                    + Duration::try_from_secs_f64(t)
                        .map_err(|_| PyValueError::new_err("timeout must be >= 0 seconds"))?,
            ),
        };
        Consumer::next(slf, deadline, true)
    }

    /// The next message if one is ready, else None.
    fn try_recv(slf: &Bound<'_, Self>) -> PyResult<Option<Message>> {
        Consumer::next(slf, None, false)
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Message>> {
        Consumer::next(slf, None, true)
    }

    /// Mark every message received so far as processed (saves a durable
    /// consumer's position; a group member acknowledges its records).
    fn commit(&mut self) -> PyResult<()> {
        self.with_consumer(|c| c.commit())?.map_err(to_py)
    }

    /// Save `position` (a record boundary already read) as the position.
    fn commit_to(&mut self, position: u64) -> PyResult<()> {
        self.with_consumer(|c| c.commit_to(position))?
            .map_err(to_py)
    }

    /// With auto-commit off, only `commit` saves the position.
    #[setter]
    fn set_auto_commit(&mut self, on: bool) -> PyResult<()> {
        self.with_consumer(|c| c.set_auto_commit(on))
    }

    /// Spin instead of sleeping while waiting (lowest latency, a busy core).
    #[setter]
    fn set_spin(&mut self, on: bool) -> PyResult<()> {
        self.with_consumer(|c| {
            c.set_wait(if on {
                ipcress::Wait::Spin
            } else {
                ipcress::Wait::Park
            })
        })
    }

    /// Next position this consumer reads (a group member: the group's).
    #[getter]
    fn position(&mut self) -> PyResult<u64> {
        let st = self.st.get();
        if st.held.is_some() {
            // The held message borrows the consumer (as in Rust, where
            // `position` cannot be called while a `Message` lives).
            return Err(PyValueError::new_err(
                "the position is known once the current message is released",
            ));
        }
        let c = st.consumer.as_mut().ok_or_else(closed)?;
        // SAFETY: no message is held, so nothing borrows the consumer; the
        // borrow ends here.
        Ok(unsafe { c.lend() }.position())
    }

    /// Bytes between this consumer's position and the stream's tail.
    #[getter]
    fn lag(&mut self) -> PyResult<u64> {
        let pos = self.position()?;
        Ok(self.stream.tail().saturating_sub(pos))
    }

    /// Name of the durable consumer or group ("" for a subscriber).
    #[getter]
    fn name(&mut self) -> PyResult<String> {
        let st = self.st.get();
        st.consumer.as_ref().ok_or_else(closed)?;
        Ok(st.name.clone())
    }

    /// Release the current message and close the consumer (a subscriber
    /// or group member leaves; a durable consumer saves its position).
    fn close(&mut self) -> PyResult<()> {
        let st = self.st.get();
        st.release()?;
        st.consumer = None;
        Ok(())
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&mut self) -> bool {
        self.st.get().consumer.is_none()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &mut self,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }
}

/// One message: a read-only buffer over shared memory until released.
#[pyclass(module = "ipcress", frozen)]
struct Message {
    consumer: Py<Consumer>,
    seq: u64,
    exports: Arc<AtomicUsize>,
}

fn held<'a>(c: &'a mut PyRefMut<'_, Consumer>, seq: u64) -> PyResult<&'a mut ConsumerState> {
    let st = c.st.get();
    if st.seq != seq || st.held.is_none() {
        return Err(PyValueError::new_err(
            "the message was released (release(), the end of its with block, or the next recv)",
        ));
    }
    Ok(st)
}

fn body(h: &Held) -> (u64, &[u8]) {
    match h {
        Held::Msg(m) => (m.position(), m.bytes().unwrap_or_default()),
        Held::Copy { position, data, .. } => (*position, data),
    }
}

fn time_of(h: &Held) -> Option<SystemTime> {
    match h {
        Held::Msg(m) => m.time(),
        Held::Copy { time, .. } => *time,
    }
}

#[pymethods]
impl Message {
    /// The record's position in the stream.
    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<u64> {
        let mut c = self.consumer.bind(py).try_borrow_mut()?;
        let st = held(&mut c, self.seq)?;
        Ok(body(st.held.as_ref().expect("held")).0)
    }

    /// When the record was committed, in seconds since the Unix epoch (as
    /// `time.time()`); None in a stream of format version 3.
    #[getter]
    fn time(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        let mut c = self.consumer.bind(py).try_borrow_mut()?;
        let st = held(&mut c, self.seq)?;
        let t = time_of(st.held.as_ref().expect("held"));
        Ok(t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let mut c = self.consumer.bind(py).try_borrow_mut()?;
        let st = held(&mut c, self.seq)?;
        Ok(body(st.held.as_ref().expect("held")).1.len())
    }

    /// A copy of the message's bytes.
    fn tobytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let mut c = self.consumer.bind(py).try_borrow_mut()?;
        let st = held(&mut c, self.seq)?;
        Ok(pyo3::types::PyBytes::new(
            py,
            body(st.held.as_ref().expect("held")).1,
        ))
    }

    /// Whether the message was released.
    #[getter]
    fn released(&self, py: Python<'_>) -> PyResult<bool> {
        let mut c = self.consumer.bind(py).try_borrow_mut()?;
        Ok(held(&mut c, self.seq).is_err())
    }

    /// Give the message back to the consumer. Raises BufferError while a
    /// memoryview or numpy array of it is alive; idempotent otherwise.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let mut c = self.consumer.bind(py).try_borrow_mut()?;
        let st = c.st.get();
        if st.seq == self.seq {
            st.release()?;
        }
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.consumer.bind(py).try_borrow_mut() {
            Ok(mut c) => match held(&mut c, self.seq) {
                Ok(st) => {
                    let (p, b) = body(st.held.as_ref().expect("held"));
                    format!("<ipcress.Message position={p} len={}>", b.len())
                }
                Err(_) => "<ipcress.Message released>".into(),
            },
            Err(_) => "<ipcress.Message>".into(),
        }
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let mut c = me.consumer.bind(py).try_borrow_mut()?;
        let st = held(&mut c, me.seq)?;
        let b = body(st.held.as_ref().expect("held")).1;
        // SAFETY: `view` is the caller's Py_buffer. The bytes stay valid
        // and unchanged while `exports` is above zero: the message is
        // released (and the consumer moves on or closes) only when
        // `exports` is zero, and the library guarantees a held message's
        // bytes (FORMAT.md: the consumer's published position holds
        // producers back). Read-only (readonly = 1). The view keeps a
        // reference to `slf`, and so to its consumer.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                b.as_ptr() as *mut _,
                b.len() as isize,
                1,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
        st.exports.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    unsafe fn __releasebuffer__(slf: Bound<'_, Self>, _view: *mut ffi::Py_buffer) {
        slf.get().exports.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // A message nobody can reach any more is released at once (its
        // exports hold references to it, so there are none).
        Python::attach(|py| {
            if let Ok(mut c) = self.consumer.bind(py).try_borrow_mut() {
                let st = c.st.get();
                if st.seq == self.seq && st.exports.load(Ordering::Acquire) == 0 {
                    st.held = None;
                }
            }
        });
    }
}

/// Write a new random key file (mode 0600, refuses to overwrite) and
/// return its fingerprint.
#[pyfunction]
fn keygen(path: PathBuf) -> PyResult<String> {
    ipcress::Key::write_new(&path)
        .map(|k| k.fingerprint())
        .map_err(|e| to_py(ipcress::Error::Key(e)))
}

#[pymodule]
fn _ipcress(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Stream>()?;
    m.add_class::<Producer>()?;
    m.add_class::<Reservation>()?;
    m.add_class::<RawWriter>()?;
    m.add_class::<Consumer>()?;
    m.add_class::<Message>()?;
    m.add("Error", m.py().get_type::<Error>())?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(keygen, m)?)?;
    Ok(())
}
