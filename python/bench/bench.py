#!/usr/bin/env python3
"""Python side by side: ipcress against multiprocessing.Queue,
multiprocessing.shared_memory with a queue of slot indices, pyzmq over
ipc:// and iceoryx2's Python binding (when installed), each producer and
consumer in its own process (multiprocessing, spawn).

    target/venv/bin/python python/bench/bench.py [--small N] [--frames N]

64-byte messages: msg/s at the consumer. 1080p RGB frames (6,220,800
bytes): the producer writes every byte into the transport's buffer (a
numpy fill), the consumer reads the frame as numpy and touches every byte
(a sum); frames/s at the consumer. Each line: transport, case, rate, and
seconds, timed by the consumer from the moment both sides start (an
event both wait on) to its last message. Numbers go to docs/BENCHMARKS.md ("Python").
"""

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np

FRAME = 1920 * 1080 * 3
# The ipcress ring for frames (--frame-ring).
FRAME_RING = 1 << 26
# Its segments (--frame-segments; None: the default, 4).
FRAME_SEGMENTS = None
SMALL = 64


# ---- ipcress --------------------------------------------------------------

def ipc_producer(root, n, size, ready):
    import ipcress

    s = ipcress.Stream.open("b", root=root)
    p = s.producer()
    ready.wait()
    if size == SMALL:
        msg = b"x" * SMALL
        send = p.send
        for _ in range(n):
            send(msg)
    else:
        for i in range(n):
            with p.reserve(size) as buf:
                np.frombuffer(buf, np.uint8).fill(i & 255)
    p.close()


def ipc_consumer(root, n, size, ready, out):
    import ipcress

    s = ipcress.Stream.open("b", root=root)
    c = s.consumer("c")
    ready.wait()
    t0 = time.perf_counter()
    m = c.recv()
    total = 0
    if size == SMALL:
        total += len(m)
        for _ in range(n - 1):
            m = c.recv()
            total += len(m)
    else:
        for i in range(n):
            if i:
                m = c.recv()
            a = np.frombuffer(m, np.uint8)
            total += int(a.sum(dtype=np.uint64))
            del a
    out.put((time.perf_counter() - t0, total))


def run_ipcress(n, size):
    import ipcress

    root = tempfile.mkdtemp(prefix="ipcress-pybench-", dir="/dev/shm")
    try:
        ring = FRAME_RING if size == FRAME else 1 << 24
        segs = FRAME_SEGMENTS if size == FRAME else None
        ipcress.Stream.create("b", root=root, size=ring, segments=segs, checksum="none")
        ipcress.Stream.open("b", root=root).consumer("c").close()
        return pair(ipc_producer, ipc_consumer, (root, n, size))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- multiprocessing.Queue ------------------------------------------------

def q_producer(q, n, size, ready):
    ready.wait()
    if size == SMALL:
        msg = b"x" * SMALL
        for _ in range(n):
            q.put(msg)
    else:
        a = np.empty(size, np.uint8)
        for i in range(n):
            a.fill(i & 255)
            q.put(a.tobytes())


def q_consumer(q, n, size, ready, out):
    ready.wait()
    t0 = time.perf_counter()
    m = q.get()
    total = len(m) if size == SMALL else int(np.frombuffer(m, np.uint8).sum(dtype=np.uint64))
    for _ in range(n - 1):
        m = q.get()
        total += len(m) if size == SMALL else int(np.frombuffer(m, np.uint8).sum(dtype=np.uint64))
    out.put((time.perf_counter() - t0, total))


def run_queue(n, size):
    q = mp.Queue(maxsize=1000 if size == SMALL else 8)
    return pair(q_producer, q_consumer, (q, n, size))


# ---- shared_memory + a queue of indices -------------------------------------

SLOTS = 8


def shm_producer(name, free, full, n, size, ready):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    slots = np.ndarray((SLOTS, size), np.uint8, buffer=shm.buf)
    ready.wait()
    for i in range(n):
        k = free.get()
        if size == SMALL:
            slots[k, :] = 120
        else:
            slots[k].fill(i & 255)
        full.put(k)
    del slots
    shm.close()


def shm_consumer(name, free, full, n, size, ready, out):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    slots = np.ndarray((SLOTS, size), np.uint8, buffer=shm.buf)
    ready.wait()
    total = 0
    t0 = time.perf_counter()
    for i in range(n):
        k = full.get()
        if size == SMALL:
            total += len(bytes(slots[k]))
        else:
            total += int(slots[k].sum(dtype=np.uint64))
        free.put(k)
    out.put((time.perf_counter() - t0, total))
    del slots
    shm.close()


def run_shm(n, size):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=SLOTS * size)
    try:
        free, full = mp.Queue(), mp.Queue()
        for k in range(SLOTS):
            free.put(k)
        return pair(shm_producer, shm_consumer, (shm.name, free, full, n, size))
    finally:
        shm.close()
        shm.unlink()


# ---- pyzmq ipc:// -----------------------------------------------------------

def zmq_producer(addr, n, size, ready):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 1000 if size == SMALL else 8)
    s.connect(addr)
    ready.wait()
    if size == SMALL:
        msg = b"x" * SMALL
        for _ in range(n):
            s.send(msg)
    else:
        a = np.empty(size, np.uint8)
        for i in range(n):
            a.fill(i & 255)
            s.send(a, copy=True)
    s.close(linger=-1)
    ctx.term()


def zmq_consumer(addr, n, size, ready, out):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 1000 if size == SMALL else 8)
    s.bind(addr)
    ready.wait()
    t0 = time.perf_counter()
    total = 0
    for _ in range(n):
        m = s.recv(copy=size == SMALL)
        if size == SMALL:
            total += len(m)
        else:
            total += int(np.frombuffer(m.buffer, np.uint8).sum(dtype=np.uint64))
    out.put((time.perf_counter() - t0, total))
    s.close()
    ctx.term()


def run_zmq(n, size):
    d = tempfile.mkdtemp(prefix="zmq-pybench-")
    try:
        return pair(zmq_producer, zmq_consumer, (f"ipc://{d}/s", n, size), consumer_first=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- iceoryx2's Python binding --------------------------------------------------

def iox_service(name, size):
    import ctypes

    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    svc = (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .subscriber_max_buffer_size(1000 if size == SMALL else 8)
        .enable_safe_overflow(False)
        .open_or_create()
    )
    return iox2, node, svc


def iox_producer(name, n, size, ready):
    import ctypes

    iox2, node, svc = iox_service(name, size)
    pub = (
        svc.publisher_builder()
        .initial_max_slice_len(size)
        .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
        .create()
    )
    ready.wait()
    if size == SMALL:
        msg = b"x" * SMALL
        for _ in range(n):
            s = pub.loan_slice_uninit(SMALL)
            ctypes.memmove(s.payload_ptr, msg, SMALL)
            s.assume_init().send()
    else:
        for i in range(n):
            s = pub.loan_slice_uninit(size)
            a = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(s.payload_ptr))
            a.fill(i & 255)
            del a
            s.assume_init().send()
    time.sleep(1)  # let the subscriber take the last samples


def iox_consumer(name, n, size, ready, out):
    iox2, node, svc = iox_service(name, size)
    sub = svc.subscriber_builder().create()
    ready.wait()
    t0 = time.perf_counter()
    total = 0
    got = 0
    while got < n:
        r = sub.receive()
        if r is None:
            continue  # the binding has no blocking receive without a waitset: poll
        if size == SMALL:
            total += len(r.payload().as_memory_view())
        else:
            total += int(np.frombuffer(r.payload().as_memory_view(), np.uint8).sum(dtype=np.uint64))
        r.delete()
        got += 1
    out.put((time.perf_counter() - t0, total))


def run_iox(n, size):
    return pair(iox_producer, iox_consumer, (f"ipcress-bench-{os.getpid()}-{size}", n, size))


# ---- harness ------------------------------------------------------------------

def pair(producer, consumer, args, consumer_first=True):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    out = ctx.Queue()
    c = ctx.Process(target=consumer, args=(*args, ready, out))
    p = ctx.Process(target=producer, args=(*args, ready))
    c.start()
    time.sleep(0.5)  # the consumer is set up (binds, registers) first
    p.start()
    time.sleep(0.5)
    ready.set()
    secs, total = out.get(timeout=600)
    p.join(600)
    c.join(600)
    if p.exitcode or c.exitcode:
        raise RuntimeError(f"producer exit {p.exitcode}, consumer exit {c.exitcode}")
    return secs, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=200_000, help="64-byte messages per run")
    ap.add_argument("--frames", type=int, default=300, help="1080p frames per run")
    ap.add_argument("--only", help="comma-separated transports")
    ap.add_argument("--frame-ring", type=int, default=1 << 26,
                    help="bytes of the ipcress ring for 1080p frames")
    ap.add_argument("--frame-segments", type=int, default=None,
                    help="segments of that ring (a frame must fit in one)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the median is printed")
    a = ap.parse_args()
    global FRAME_RING, FRAME_SEGMENTS
    FRAME_RING, FRAME_SEGMENTS = a.frame_ring, a.frame_segments
    global mp
    mp = mp.get_context("spawn")
    transports = {
        "ipcress": run_ipcress,
        "multiprocessing.Queue": run_queue,
        "shared_memory+Queue": run_shm,
    }
    try:
        import zmq  # noqa: F401

        transports["pyzmq ipc://"] = run_zmq
    except ImportError:
        print("pyzmq not installed: left out", file=sys.stderr)
    try:
        import iceoryx2  # noqa: F401

        transports["iceoryx2 (Python)"] = run_iox
    except ImportError:
        print("iceoryx2 not installed: left out", file=sys.stderr)
    if a.only:
        transports = {k: v for k, v in transports.items() if k in a.only.split(",")}
    print(f"# {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, numpy {np.__version__}")
    for size, n, unit in ((SMALL, a.small, "msg/s"), (FRAME, a.frames, "frames/s")):
        for name, run in transports.items():
            times = []
            for _ in range(a.reps):
                secs, total = run(n, size)
                expect = n * SMALL if size == SMALL else None
                if expect is not None and total != expect:
                    raise RuntimeError(f"{name}: got {total} bytes, expected {expect}")
                times.append(secs)
            secs = sorted(times)[len(times) // 2]
            spread = ", ".join(f"{n / t:,.0f}" for t in times)
            print(f"{name:24} {size:>9} B  {n / secs:>12,.0f} {unit}  (median of {a.reps}: {spread})",
                  flush=True)


if __name__ == "__main__":
    main()
