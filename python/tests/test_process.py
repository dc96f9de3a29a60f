"""Zero-copy numpy views, use after release, a killed consumer, Ctrl-C in
a blocked recv, and encrypted streams, with real processes."""

import os
import signal
import time

import numpy as np
import pytest

import ipcress
from conftest import WATCHDOG, child, finish, run_child


def mappings(path):
    """(start, end) of every mapping of a file under `path` in this process."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip().startswith(str(path)):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    return out


def inside(addr, n, spans):
    return any(lo <= addr and addr + n <= hi for lo, hi in spans)


def test_numpy_view_is_zero_copy_and_sees_the_producers_write(root):
    frame = 320 * 240 * 3
    s = ipcress.Stream.create("s", root=root, size=1 << 22, checksum="none")
    c = s.consumer("c")
    # Another process fills a reserved frame in place.
    run_child(
        """
import sys, numpy as np, ipcress
s = ipcress.Stream.open("s", root=sys.argv[1])
p = s.producer()
with p.reserve(int(sys.argv[2])) as buf:
    a = np.frombuffer(buf, np.uint8)
    a[:] = np.arange(a.size, dtype=np.uint64) % 251
    del a
""",
        root,
        frame,
    )
    m = c.recv(timeout=WATCHDOG)
    a = np.frombuffer(m, np.uint8).reshape(240, 320, 3)
    addr = a.__array_interface__["data"][0]
    assert inside(addr, frame, mappings(s.dir)), "the array is not in the stream's mapping"
    assert not a.flags.writeable and not a.flags.owndata
    assert np.array_equal(a.ravel(), (np.arange(frame, dtype=np.uint64) % 251).astype(np.uint8))
    del a
    m.release()

    # In one process the producer's reserved memory and the consumer's view
    # are the very same bytes: a write through the reservation is what the
    # consumer's array shows, with no copy in between.
    p = s.producer()
    r = p.reserve(frame)
    w = np.frombuffer(r, np.uint8)
    waddr = w.__array_interface__["data"][0]
    assert inside(waddr, frame, mappings(s.dir))
    w[:] = 42
    del w
    r.commit()
    with c.recv(timeout=WATCHDOG) as m:
        v = np.frombuffer(m, np.uint8)
        assert v.__array_interface__["data"][0] == waddr
        assert (v == 42).all()
        del v


def test_use_after_release_raises_and_release_waits_for_views(root):
    s = ipcress.Stream.create("s", root=root, size=1 << 20)
    c = s.subscribe()
    p = s.producer()
    p.send(b"first message")
    p.send(b"second")
    m = c.recv(timeout=5)
    a = np.frombuffer(m, np.uint8)
    mv = memoryview(m)
    # Releasing, or the next recv, while views are alive is refused; the
    # views still read the message (never freed memory).
    with pytest.raises(BufferError):
        m.release()
    with pytest.raises(BufferError):
        c.recv(timeout=5)
    assert bytes(a) == b"first message" and mv.tobytes() == b"first message"
    del a
    mv.release()
    m.release()
    assert m.released
    for use in (len, bytes, memoryview, lambda m: np.frombuffer(m, np.uint8), lambda m: m.position):
        with pytest.raises(ValueError):
            use(m)
    m.release()  # idempotent
    # The next recv releases the previous message implicitly.
    m2 = c.recv(timeout=5)
    assert bytes(m2) == b"second"
    p.send(b"third")
    m3 = c.recv(timeout=5)
    with pytest.raises(ValueError):
        bytes(m2)
    assert bytes(m3) == b"third"
    # Closing the consumer releases its message.
    c.close()
    with pytest.raises(ValueError):
        bytes(m3)


READ_SLOWLY = """
import sys, time, ipcress
s = ipcress.Stream.open("s", root=sys.argv[1])
c = s.group("g") if sys.argv[2] == "group" else s.consumer("d")
for m in c:
    print(bytes(m).decode(), flush=True)
    time.sleep(0.002)
"""


@pytest.mark.parametrize("kind", ["durable", "group"])
def test_sigkilled_consumer_loses_nothing(root, kind):
    n = 2000
    s = ipcress.Stream.create("s", root=root, size=1 << 20)
    # Register the reader before anything is sent.
    (s.group("g") if kind == "group" else s.consumer("d")).close()
    p = s.producer()
    for i in range(n):
        p.send(b"%d" % i)
    ch = child(READ_SLOWLY, root, kind)
    seen = []
    # Kill it in the middle, after some messages (at least one line read).
    while len(seen) < 200:
        line = ch.stdout.readline()
        assert line, ch.stderr.read()
        seen.append(int(line))
    ch.send_signal(signal.SIGKILL)
    rest, _ = ch.communicate(timeout=WATCHDOG)
    seen += [int(x) for x in rest.split()]
    assert ch.returncode == -signal.SIGKILL
    # A new process with the same name goes on: at-least-once, nothing lost.
    again = run_child(
        """
import sys, ipcress
s = ipcress.Stream.open("s", root=sys.argv[1])
c = s.group("g") if sys.argv[2] == "group" else s.consumer("d")
while (m := c.recv(timeout=1)) is not None:
    print(bytes(m).decode())
""",
        root,
        kind,
    )
    after = [int(x) for x in again.split()]
    assert after, "the second reader got nothing"
    assert set(seen) | set(after) == set(range(n)), "messages were lost"
    # Redelivery only of what the killed reader had not acknowledged: the
    # second reader starts at or before the first one's last message.
    assert after[0] <= max(seen) + 1
    assert after == sorted(after) and after[-1] == n - 1


def test_ctrl_c_ends_a_blocked_recv(root):
    s = ipcress.Stream.create("s", root=root, size=1 << 16)
    ch = child(
        """
import sys, ipcress
s = ipcress.Stream.open("s", root=sys.argv[1])
c = s.consumer("d")
print("waiting", flush=True)
try:
    c.recv()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    c.close()
    sys.exit(0)
print("returned", flush=True)
sys.exit(1)
""",
        root,
    )
    assert ch.stdout.readline() == "waiting\n"
    time.sleep(0.3)  # let it block in recv (not a bound on anything)
    ch.send_signal(signal.SIGINT)
    out = finish(ch)
    assert out == "interrupted\n"
    assert s.tail == 0


def test_ctrl_c_ends_a_send_blocked_on_a_full_ring(root):
    s = ipcress.Stream.create("s", root=root, size=1 << 16)
    s.consumer("d").close()  # holds the ring: the producer fills it and waits
    ch = child(
        """
import sys, ipcress
s = ipcress.Stream.open("s", root=sys.argv[1])
p = s.producer()
n = 0
try:
    while True:
        p.send(bytes(1000))
        n += 1
        if n == 10:
            print("sending", flush=True)
except KeyboardInterrupt:
    print("interrupted", n, flush=True)
""",
        root,
    )
    assert ch.stdout.readline() == "sending\n"
    time.sleep(0.3)
    ch.send_signal(signal.SIGINT)
    out = finish(ch).split()
    assert out[0] == "interrupted"
    # Every send that returned is in the stream, whole.
    c = s.consumer("d")
    got = 0
    while (m := c.try_recv()) is not None:
        assert bytes(m) == bytes(1000)
        got += 1
    assert got == int(out[1])


def test_encrypted_stream_needs_the_right_key(root):
    key, other = root / "key", root / "other"
    ipcress.keygen(key)
    fp = ipcress.keygen(other)
    assert isinstance(fp, str) and fp
    with pytest.raises(ipcress.KeyFileError):
        ipcress.keygen(key)  # never overwrites
    assert (os.stat(key).st_mode & 0o777) == 0o600
    s = ipcress.Stream.create("s", root=root, size=1 << 20, key_file=key)
    assert s.encrypted
    c = s.consumer("c")
    s.producer().send(b"secret payload")
    # Without a key: no producer, no consumer.
    bare = ipcress.Stream.open("s", root=root)
    with pytest.raises(ipcress.KeyRequiredError):
        bare.producer()
    with pytest.raises(ipcress.KeyRequiredError):
        bare.subscribe()
    # With the wrong key in another process: the record does not decode.
    out = run_child(
        """
import sys, ipcress
s = ipcress.Stream.open("s", root=sys.argv[1], key_file=sys.argv[2])
c = s.subscribe(start="start")
try:
    c.recv(timeout=5)
    print("decoded")
except ipcress.DecodeError as e:
    print("DecodeError", e.position)
""",
        root,
        other,
    )
    assert out.split() == ["DecodeError", "0"]
    # The plaintext is nowhere in the files.
    for f in s.dir.iterdir():
        assert b"secret payload" not in f.read_bytes()
    # With the key: the message.
    assert bytes(c.recv(timeout=5)) == b"secret payload"


def test_position_while_a_message_is_held_raises(root):
    s = ipcress.Stream.create("s", root=root, size=1 << 16)
    c = s.consumer("c")
    assert c.name == "c" and c.position == 0
    p = s.producer()
    assert p.max_message_len == s.max_message_len
    p.send(b"a")
    m = c.recv(timeout=5)
    with pytest.raises(ValueError):
        c.position
    m.release()
    assert c.position > 0 and c.lag == 0
