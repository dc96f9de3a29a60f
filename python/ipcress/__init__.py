"""ipcress: streams of data between processes through shared memory.

A stream is a named directory of memory-mapped files (/dev/shm/ipcress by
default, or ``$IPCRESS_DIR``). Producers append records; consumers read them
at their own position: durable named consumers, ephemeral subscribers, or
members of a group that share the work. Messages are read-only buffers over
the shared memory (``numpy.frombuffer(msg, ...)`` is a view, not a copy), and
``Producer.reserve(n)`` lends writable shared memory to fill in place.

See docs/PYTHON.md in the repository for the design.
"""

import io as _io

from ._ipcress import (  # noqa: F401
    AbortedError,
    AlreadyExistsError,
    Consumer,
    CorruptError,
    DecodeError,
    Error,
    FullError,
    IncompatibleError,
    InterruptedError,
    InUseError,
    InvalidNameError,
    InvalidOptionsError,
    IoError,
    KeyFileError,
    KeyRequiredError,
    LaggedError,
    Message,
    NoSpaceError,
    NotFoundError,
    PermissionDeniedError,
    Producer,
    RawWriter,
    RemovedError,
    Reservation,
    SlotsExhaustedError,
    StreamInUseError,
    Stream,
    TooLargeError,
    UnblockedError,
    keygen,
)

__all__ = [
    "Stream",
    "Producer",
    "Reservation",
    "Writer",
    "Consumer",
    "Message",
    "keygen",
    "Error",
    "AbortedError",
    "AlreadyExistsError",
    "CorruptError",
    "DecodeError",
    "FullError",
    "IncompatibleError",
    "InterruptedError",
    "InUseError",
    "InvalidNameError",
    "InvalidOptionsError",
    "IoError",
    "KeyFileError",
    "KeyRequiredError",
    "LaggedError",
    "NoSpaceError",
    "NotFoundError",
    "PermissionDeniedError",
    "RemovedError",
    "SlotsExhaustedError",
    "StreamInUseError",
    "TooLargeError",
    "UnblockedError",
]


class Writer(_io.RawIOBase):
    """One message of any size as a binary file: ``write`` appends,
    ``close`` finishes the message (other producers of the stream wait
    meanwhile). As a context manager it finishes the message on success and
    aborts it (readers skip it) on an exception. ``position`` is the
    message's position once finished."""

    def __init__(self, raw):
        super().__init__()
        self._raw = raw
        self.position = None

    def writable(self):
        return True

    def write(self, b):
        if self.closed:
            raise ValueError("write to a closed ipcress.Writer")
        return self._raw.write(b)

    def close(self):
        if not self.closed:
            try:
                if not self._raw.done:
                    self.position = self._raw.finish()
            finally:
                super().close()

    def abort(self):
        """Close the message as aborted: readers skip it."""
        if not self.closed:
            try:
                if not self._raw.done:
                    self._raw.abort()
            finally:
                super().close()

    def __exit__(self, t, v, tb):
        if t is not None:
            self.abort()
        else:
            self.close()
        return False

    def __del__(self):
        # Unlike a file, a message left open is aborted, not completed.
        try:
            self.abort()
        except Exception:
            pass


def _writer(self):
    """A binary file object (``ipcress.Writer``) writing one message of any
    size in fragments."""
    return Writer(self._writer())


Producer.writer = _writer
