"""Round trips across real processes for every stream kind and codec, the
CLI on either side, and the API's basic contracts."""

import hashlib
import os
import subprocess

import numpy as np
import pytest

import ipcress
from conftest import WATCHDOG, child, finish, run_child

# A message larger than one frame of a 1 MiB ring goes through writer().
SIZES = [0, 1, 7, 64, 1000, 4096, 70_000, 600_000]


def payload(i, n):
    return hashlib.sha256(str(i).encode()).digest() * (n // 32) + b"x" * (n % 32)


PRODUCE = """
import sys, hashlib, ipcress
root, name, key = sys.argv[1], sys.argv[2], sys.argv[3] or None
def payload(i, n):
    return hashlib.sha256(str(i).encode()).digest() * (n // 32) + b"x" * (n % 32)
s = ipcress.Stream.open(name, root=root, key_file=key)
p = s.producer()
for i, n in enumerate(SIZES_HERE):
    data = payload(i, n)
    if n > p.max_message_len:
        with p.writer() as w:
            w.write(data[: n // 2])
            w.write(data[n // 2 :])
    elif i % 2:
        with p.reserve(n) as buf:
            buf[:] = data
    else:
        p.send(data)
p.close()
""".replace("SIZES_HERE", repr(SIZES))

CASES = {
    "ring": dict(size=1 << 20),
    "log": dict(log=True, segment_size=1 << 20),
    "ring-lz4": dict(size=1 << 20, compression="lz4"),
    "log-zstd": dict(log=True, segment_size=1 << 20, compression="zstd"),
    "ring-zstd9": dict(size=1 << 20, compression="zstd:9"),
    "ring-no-checksum": dict(size=1 << 20, checksum="none"),
    "ring-overwrite": dict(size=1 << 22, policy="overwrite"),
    "ring-encrypted": dict(size=1 << 20, encrypt=True),
    "log-encrypted-lz4": dict(log=True, segment_size=1 << 20, compression="lz4", encrypt=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_across_processes(root, case, cli):
    opts = dict(CASES[case])
    key = ""
    if opts.pop("encrypt", False):
        key = str(root / "key")
        subprocess.run([cli, "keygen", key], check=True, capture_output=True)
        opts["key_file"] = key
    s = ipcress.Stream.create("s", root=root, **opts)
    c = s.consumer("reader")
    run_child(PRODUCE, root, "s", key)
    for i, n in enumerate(SIZES):
        with c.recv(timeout=WATCHDOG) as m:
            assert bytes(m) == payload(i, n), f"message {i} of {n} bytes"
            assert len(m) == n
    assert c.try_recv() is None
    st = s.stat()
    assert st["consumers"][0]["name"] == "reader"
    assert st["consumers"][0]["lag"] == 0


def test_consumer_in_child_producer_here(root):
    s = ipcress.Stream.create("s", root=root, size=1 << 16)
    # The durable consumer exists (and holds the ring) before anything is
    # sent.
    s.consumer("d").close()
    p = s.producer()
    reader = """
import sys, ipcress
s = ipcress.Stream.open("s", root=sys.argv[1])
with s.consumer("d") as c:
    for m in c:
        b = bytes(m)
        if b == b"END":
            break
        print(b.decode(), flush=True)
"""
    ch = child(reader, root)
    # 5000 messages through a 64 KiB ring: the producer waits for the child.
    for i in range(5000):
        p.send(b"%d" % i)
    p.send(b"END")
    got = finish(ch).split()
    assert got == [str(i) for i in range(5000)]


def test_cli_put_to_python_and_python_to_cli_get(root, cli):
    env = {"IPCRESS_DIR": str(root)}
    subprocess.run([cli, "create", "a", "--ring", "1M"], check=True, env=env)
    lines = [f"line {i}" for i in range(1000)]
    subprocess.run(
        [cli, "put", "a"], input="\n".join(lines) + "\n", text=True, check=True, env=env
    )
    s = ipcress.Stream.open("a", root=root)
    c = s.subscribe(start="start")
    got = []
    while (m := c.try_recv()) is not None:
        got.append(bytes(m).decode())
    assert got == lines
    # Fixed-size records: get --record-size writes them back to back.
    b = ipcress.Stream.create("b", root=root, size=1 << 20)
    pb = b.producer()
    for i in range(10):
        pb.send(b"%03d" % i)
    out = subprocess.run(
        [cli, "get", "b", "-n", "10", "--record-size", "3"],
        capture_output=True,
        check=True,
        env=env,
        timeout=WATCHDOG,
    )
    assert out.stdout == b"".join(b"%03d" % i for i in range(10))


def test_put_record_size_refuses_a_short_last_record(root, cli):
    env = {"IPCRESS_DIR": str(root)}
    subprocess.run([cli, "create", "f"], check=True, env=env)
    r = subprocess.run(
        [cli, "put", "f", "--record-size", "4"], input=b"abcdefgh12", capture_output=True, env=env
    )
    assert r.returncode != 0
    assert b"2 of 4 bytes" in r.stderr
    c = ipcress.Stream.open("f", root=root).subscribe()
    assert [bytes(c.recv(timeout=5)) for _ in range(2)] == [b"abcd", b"efgh"]
    assert c.try_recv() is None


def test_errors_are_classes_under_error(root):
    with pytest.raises(ipcress.NotFoundError) as e:
        ipcress.Stream.open("nope", root=root)
    assert isinstance(e.value, ipcress.Error)
    assert e.value.name == "nope" and "no such stream" in str(e.value)
    ipcress.Stream.create("s", root=root, size=1 << 16)
    with pytest.raises(ipcress.AlreadyExistsError):
        ipcress.Stream.create("s", root=root, size=1 << 16)
    with pytest.raises(ipcress.InvalidNameError):
        ipcress.Stream.create("../x", root=root)
    with pytest.raises(ipcress.InvalidOptionsError):
        ipcress.Stream.create("t", root=root, size=3000)
    s = ipcress.Stream.open("s", root=root)
    p = s.producer()
    with pytest.raises(ipcress.TooLargeError) as e:
        p.send(bytes(s.max_message_len + 1))
    assert e.value.max == s.max_message_len
    # A full ring under the block policy: try_send raises FullError.
    sub = s.subscribe()  # holds the ring
    with pytest.raises(ipcress.FullError):
        for _ in range(100_000):
            p.try_send(bytes(1000))
    assert sub.lag > 0
    with pytest.raises(ipcress.StreamInUseError):
        ipcress.Stream.remove("s", root=root)
    d = s.consumer("d")
    out = run_child(
        """
import sys, ipcress
try:
    ipcress.Stream.open("s", root=sys.argv[1]).consumer("d")
except ipcress.InUseError as e:
    print(type(e).__name__, e.pid)
""",
        root,
    )
    assert out.split() == ["InUseError", str(os.getpid())]
    d.close()


def test_reservation_aborts_on_exception_and_refuses_while_exported(root):
    s = ipcress.Stream.create("s", root=root, size=1 << 20)
    c = s.subscribe()
    p = s.producer()
    with pytest.raises(RuntimeError):
        with p.reserve(100) as buf:
            buf[:4] = b"lost"
            raise RuntimeError("stage failed")
    r = p.reserve(8)
    a = np.frombuffer(r, np.uint8)
    a[:] = 7
    with pytest.raises(BufferError):
        r.commit()
    with pytest.raises(BufferError):
        p.send(b"other")  # the producer is lent to the reservation
    del a
    r.commit()
    with pytest.raises(ValueError):
        r.commit()
    m = c.recv(timeout=5)
    assert bytes(m) == bytes([7] * 8)  # the aborted record was skipped
    # A writer aborted by an exception: readers get AbortedError (not
    # fatal) and go on with the next message.
    with pytest.raises(KeyError):
        with p.writer() as w:
            w.write(b"y" * 300_000)
            raise KeyError("x")
    p.send(b"after")
    with pytest.raises(ipcress.AbortedError):
        c.recv(timeout=5)
    assert bytes(c.recv(timeout=5)) == b"after"
    assert c.try_recv() is None


def test_messages_carry_their_commit_time(root, cli):
    import time

    s = ipcress.Stream.create("s", root=root, size=1 << 20)
    c = s.subscribe()
    p = s.producer()
    before = time.time()
    p.send(b"a")
    with p.writer() as w:
        w.write(b"z" * 300_000)  # fragmented: copied out, time kept
    t1 = c.recv(timeout=5).time
    t2 = c.recv(timeout=5).time
    after = time.time()
    assert before <= t1 <= t2 <= after
    # A stream of format 3 has no times.
    subprocess.run(
        [cli, "create", "old", "--ring", "64K", "--format-version", "3"],
        check=True,
        env=dict(os.environ, IPCRESS_DIR=str(root)),
    )
    old = ipcress.Stream.open("old", root=root)
    o = old.subscribe()
    old.producer().send(b"x")
    assert o.recv(timeout=5).time is None
