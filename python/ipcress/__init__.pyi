"""Type hints of the ipcress package (the extension module `ipcress._ipcress`
and the `Writer` file wrapper)."""

import io
import os
from types import TracebackType
from typing import Any, Dict, Iterator, List, Literal, Optional, Type, Union

from typing_extensions import Buffer

StrPath = Union[str, os.PathLike[str]]
Start = Union[Literal["start", "end"], int]

class Stream:
    """A stream: a named directory of memory-mapped files under `root`
    (default `$IPCRESS_DIR`, else /dev/shm/ipcress)."""

    @staticmethod
    def create(
        name: str,
        *,
        root: Optional[StrPath] = None,
        log: bool = False,
        size: Optional[int] = None,
        segment_size: Optional[int] = None,
        segments: Optional[int] = None,
        retain_bytes: Optional[int] = None,
        retain_age: Optional[float] = None,
        policy: Literal["block", "overwrite"] = "block",
        checksum: Literal["crc32c", "none"] = "crc32c",
        compression: str = "none",
        key_file: Optional[StrPath] = None,
        mode: Optional[int] = None,
        durable_timeout: Optional[float] = None,
    ) -> "Stream":
        """Create a stream, with the options of `ipcress create`: a ring of
        `size` bytes (a power of two, default 64 MiB) in `segments`
        segments, or a log (`log=True`) of `segment_size`-byte files with
        retention (`retain_bytes`, `retain_age` in seconds); `policy`,
        `checksum`, `compression` ("none", "lz4", "zstd", "zstd:LEVEL");
        `key_file` (made by `ipcress keygen` or `keygen`) encrypts the
        records; `mode` of the files (0o600 by default); `durable_timeout`
        in seconds. Raises `AlreadyExistsError`, `InvalidOptionsError`, ..."""
    @staticmethod
    def open(
        name: str, *, root: Optional[StrPath] = None, key_file: Optional[StrPath] = None
    ) -> "Stream":
        """Open an existing stream; an encrypted one needs `key_file`."""
    @staticmethod
    def remove(name: str, *, root: Optional[StrPath] = None) -> None:
        """Remove a stream and its files (`StreamInUseError` while a process uses it)."""
    @staticmethod
    def list(*, root: Optional[StrPath] = None) -> List[str]:
        """Names of the streams under `root`."""
    @property
    def name(self) -> str: ...
    @property
    def dir(self) -> os.PathLike[str]:
        """The directory holding the stream's files."""
    @property
    def root(self) -> os.PathLike[str]: ...
    @property
    def layout(self) -> Literal["ring", "log"]: ...
    @property
    def head(self) -> int:
        """Position of the oldest retained record."""
    @property
    def tail(self) -> int:
        """Position the next record will get."""
    @property
    def capacity(self) -> Optional[int]:
        """A ring's capacity in bytes (None for a log)."""
    @property
    def max_message_len(self) -> int:
        """Largest message `send` and `reserve` accept; larger ones: `writer()`."""
    @property
    def encrypted(self) -> bool: ...
    def producer(self) -> "Producer":
        """A new producer."""
    def consumer(self, name: str, *, start: Optional[Start] = None) -> "Consumer":
        """The durable consumer `name`: its position is saved in the stream
        and survives the process. A new one starts at `start` ("start", the
        default: the oldest retained record; "end"; or a position)."""
    def subscribe(self, *, start: Optional[Start] = None) -> "Consumer":
        """An ephemeral subscriber, gone when closed."""
    def group(self, name: str, *, start: Optional[Start] = None) -> "Consumer":
        """A member of group `name`: each record goes to one member; a dead
        member's unacknowledged records go to another."""
    def remove_consumer(self, name: str) -> None:
        """Remove a durable consumer or group of the stream."""
    def stat(self) -> Dict[str, Any]:
        """Options, positions (head, tail), producer totals and the
        consumers (name, kind, position, lag, pid, alive, messages)."""

class Producer:
    """Appends records to a stream. One reservation or writer at a time;
    use one producer per thread."""

    def send(self, data: Buffer) -> int:
        """Append one message (any bytes-like object); waits for space under
        the block policy (Ctrl-C interrupts the wait). Returns its position."""
    def try_send(self, data: Buffer) -> int:
        """Append one message or raise `FullError` at once."""
    def reserve(self, n: int) -> "Reservation":
        """Claim `n` bytes of shared memory to fill in place."""
    def writer(self) -> "Writer":
        """A binary file object writing one message of any size."""
    @property
    def max_message_len(self) -> int: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> "Producer": ...
    def __exit__(
        self,
        t: Optional[Type[BaseException]],
        v: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Reservation(Buffer):
    """Writable shared memory claimed by `Producer.reserve`. As a context
    manager it gives a writable memoryview, released on exit, then commits
    (aborts on an exception). Every memoryview or numpy array of it must be
    gone before `commit`/`abort` (else `BufferError`)."""

    def commit(self) -> int:
        """Publish the record; returns its position."""
    def abort(self) -> None:
        """Give the space up: readers skip the record."""
    @property
    def position(self) -> Optional[int]:
        """The record's position (None with compression: placed at commit)."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...
    def __enter__(self) -> memoryview: ...
    def __exit__(
        self,
        t: Optional[Type[BaseException]],
        v: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Writer(io.RawIOBase):
    """One message of any size as a binary file: `close()` (or the end of a
    `with` block) finishes it, an exception in the block aborts it."""

    position: Optional[int]
    """The message's position once finished."""
    def write(self, b: Buffer) -> int: ...
    def abort(self) -> None:
        """Close the message as aborted: readers skip it."""

class RawWriter:
    def write(self, data: Buffer) -> int: ...
    def finish(self) -> int: ...
    def abort(self) -> None: ...
    @property
    def done(self) -> bool: ...

class Consumer:
    """Reads a stream. One message at a time: the next `recv` releases the
    previous message (and raises `BufferError` if a view of it is alive)."""

    def recv(self, timeout: Optional[float] = None) -> Optional["Message"]:
        """Wait for the next message, at most `timeout` seconds (None: no
        limit); None on timeout. Releases the GIL while waiting; Ctrl-C
        raises KeyboardInterrupt."""
    def try_recv(self) -> Optional["Message"]:
        """The next message if one is ready, else None."""
    def __iter__(self) -> Iterator["Message"]: ...
    def __next__(self) -> "Message": ...
    def commit(self) -> None:
        """Mark what was received as processed (automatic by default)."""
    def commit_to(self, position: int) -> None: ...
    auto_commit: bool
    """Write-only: with False, only `commit` saves the position."""
    spin: bool
    """Write-only: spin instead of sleeping while waiting."""
    @property
    def position(self) -> int:
        """Next position read (a group member: the group's). Raises
        ValueError while a message is held (it borrows the consumer)."""
    @property
    def lag(self) -> int:
        """Bytes between `position` and the stream's tail (ValueError while
        a message is held)."""
    @property
    def name(self) -> str: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> "Consumer": ...
    def __exit__(
        self,
        t: Optional[Type[BaseException]],
        v: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Message(Buffer):
    """One message: a read-only buffer over the shared memory (or over the
    consumer's decode buffer for compressed, encrypted or overwrite
    streams). `numpy.frombuffer(msg, dtype)` is a view, valid until the
    message is released (`release()`, the end of a `with` block, or the
    consumer's next `recv`); releasing while a view is alive raises
    `BufferError`, and every use after release raises `ValueError`."""

    @property
    def position(self) -> int: ...
    @property
    def time(self) -> Optional[float]:
        """Commit time in seconds since the epoch (None: a format-3 stream)."""
    @property
    def released(self) -> bool: ...
    def __len__(self) -> int: ...
    def tobytes(self) -> bytes:
        """A copy of the bytes."""
    def release(self) -> None: ...
    def __buffer__(self, flags: int) -> memoryview: ...
    def __enter__(self) -> "Message": ...
    def __exit__(
        self,
        t: Optional[Type[BaseException]],
        v: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def keygen(path: StrPath) -> str:
    """Write a new random key file (mode 0600, never overwrites); returns its
    fingerprint."""

class Error(Exception):
    """Base class of every ipcress error; the message is the library's."""

class FullError(Error): ...
class LaggedError(Error):
    skipped_bytes: int

class CorruptError(Error):
    position: int
    reason: str

class IncompatibleError(Error):
    found: int
    expected: int

class NoSpaceError(Error):
    path: str

class PermissionDeniedError(Error):
    path: str

class NotFoundError(Error):
    what: str
    name: str

class AlreadyExistsError(Error):
    name: str

class InvalidNameError(Error):
    name: str
    reason: str

class InvalidOptionsError(Error): ...
class TooLargeError(Error):
    len: int
    max: int

class InUseError(Error):
    name: str
    pid: int

class StreamInUseError(Error):
    name: str

class SlotsExhaustedError(Error): ...
class DecodeError(Error):
    stream: str
    position: int
    reason: str

class KeyRequiredError(Error):
    stream: str

class KeyFileError(Error): ...
class AbortedError(Error):
    position: int

class UnblockedError(Error):
    position: int

class InterruptedError(Error): ...
class RemovedError(Error):
    what: str
    name: str

class IoError(Error): ...
