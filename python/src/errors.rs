//! One Python exception class per kind of library error, all under
//! `ipcress.Error`, with the library's message and the variant's fields as
//! attributes.

use pyo3::prelude::*;
use pyo3::{PyTypeInfo, create_exception};

use crate::Error;

macro_rules! kinds {
    ($($name:ident: $doc:literal),* $(,)?) => {
        $(create_exception!(ipcress, $name, Error, $doc);)*

        /// Add every class to the module.
        pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
            $(m.add(stringify!($name), m.py().get_type::<$name>())?;)*
            Ok(())
        }
    };
}

kinds! {
    FullError: "The ring is full (try_send under the block policy).",
    LaggedError: "The consumer was lapped; attribute skipped_bytes. It goes on at the oldest retained record.",
    CorruptError: "Data in the shared files is damaged or hostile; attributes position, reason.",
    IncompatibleError: "The stream was written by an incompatible format version; attributes found, expected.",
    NoSpaceError: "The file system holding the stream is full; attribute path.",
    PermissionDeniedError: "The OS refused access to a stream file; attribute path.",
    NotFoundError: "No stream or consumer of that name; attributes what, name.",
    AlreadyExistsError: "A stream of that name exists already; attribute name.",
    InvalidNameError: "The name is not [A-Za-z0-9._-]{1,128}; attributes name, reason.",
    InvalidOptionsError: "The options are inconsistent.",
    TooLargeError: "The message is larger than send/reserve allow (use writer()); attributes len, max.",
    InUseError: "The durable consumer is held by a live process; attributes name, pid.",
    StreamInUseError: "The stream is open in a running process; attribute name.",
    SlotsExhaustedError: "All consumer or producer slots of the stream are taken.",
    DecodeError: "A record could not be decoded (wrong key, damaged compressed data); attributes stream, position, reason.",
    KeyRequiredError: "The stream is encrypted and no key was given; attribute stream.",
    KeyFileError: "A key file is missing, unreadable, of the wrong length or too open.",
    AbortedError: "A fragmented message was cut short by a producer that died; attribute position. Not fatal.",
    UnblockedError: "A record was aborted after the unblock timeout; attribute position.",
    InterruptedError: "A wait was interrupted.",
    RemovedError: "The stream, consumer or group was removed while in use; attributes what, name.",
    IoError: "Any other I/O error.",
}

/// The Python exception for a library error.
pub fn to_py(e: ipcress::Error) -> PyErr {
    use ipcress::Error as E;
    let msg = e.to_string();
    Python::attach(|py| {
        let (ty, attrs): (Bound<'_, pyo3::types::PyType>, Vec<(&str, Py<PyAny>)>) = match &e {
            E::Full => (FullError::type_object(py), vec![]),
            E::Lagged { skipped_bytes } => (
                LaggedError::type_object(py),
                vec![("skipped_bytes", val(py, *skipped_bytes))],
            ),
            E::Corrupt { position, reason } => (
                CorruptError::type_object(py),
                vec![
                    ("position", val(py, *position)),
                    ("reason", val(py, reason)),
                ],
            ),
            E::Incompatible { found, expected } => (
                IncompatibleError::type_object(py),
                vec![("found", val(py, *found)), ("expected", val(py, *expected))],
            ),
            E::NoSpace { path } => (NoSpaceError::type_object(py), vec![("path", val(py, path))]),
            E::PermissionDenied { path } => (
                PermissionDeniedError::type_object(py),
                vec![("path", val(py, path))],
            ),
            E::NotFound { what, name } => (
                NotFoundError::type_object(py),
                vec![("what", val(py, *what)), ("name", val(py, name))],
            ),
            E::AlreadyExists { name } => (
                AlreadyExistsError::type_object(py),
                vec![("name", val(py, name))],
            ),
            E::InvalidName { name, reason } => (
                InvalidNameError::type_object(py),
                vec![("name", val(py, name)), ("reason", val(py, *reason))],
            ),
            E::InvalidOptions(_) => (InvalidOptionsError::type_object(py), vec![]),
            E::TooLarge { len, max } => (
                TooLargeError::type_object(py),
                vec![("len", val(py, *len)), ("max", val(py, *max))],
            ),
            E::InUse { name, pid } => (
                InUseError::type_object(py),
                vec![("name", val(py, name)), ("pid", val(py, *pid))],
            ),
            E::StreamInUse { name } => (
                StreamInUseError::type_object(py),
                vec![("name", val(py, name))],
            ),
            E::SlotsExhausted(_) => (SlotsExhaustedError::type_object(py), vec![]),
            E::Decode {
                stream,
                position,
                reason,
            } => (
                DecodeError::type_object(py),
                vec![
                    ("stream", val(py, stream)),
                    ("position", val(py, *position)),
                    ("reason", val(py, reason)),
                ],
            ),
            E::KeyRequired { stream } => (
                KeyRequiredError::type_object(py),
                vec![("stream", val(py, stream))],
            ),
            E::Key(_) => (KeyFileError::type_object(py), vec![]),
            E::Aborted { position } => (
                AbortedError::type_object(py),
                vec![("position", val(py, *position))],
            ),
            E::Unblocked { position } => (
                UnblockedError::type_object(py),
                vec![("position", val(py, *position))],
            ),
            E::Interrupted => (InterruptedError::type_object(py), vec![]),
            E::Removed { what, name } => (
                RemovedError::type_object(py),
                vec![("what", val(py, *what)), ("name", val(py, name))],
            ),
            E::Io { .. } => (IoError::type_object(py), vec![]),
            _ => (Error::type_object(py), vec![]),
        };
        match ty.call1((msg.clone(),)) {
            Ok(v) => {
                for (k, x) in attrs {
                    // An attribute that cannot be set leaves the message.
                    let _ = v.setattr(k, x);
                }
                PyErr::from_value(v)
            }
            Err(e) => e,
        }
    })
}

fn val<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    pyo3::IntoPyObjectExt::into_py_any(v, py).unwrap_or_else(|_| py.None())
}
