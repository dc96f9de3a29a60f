#!/usr/bin/env python3
"""The video pipeline: ffmpeg decodes a video to raw RGB frames into a
stream (`ipcress put --record-size`), a group of Python workers inverts
every frame with numpy from shared memory into frames reserved in a second
stream, and a second ffmpeg encodes that stream (`ipcress get
--record-size`). No intermediate file; memory stays flat for any length.

    python3 examples/video/run.py --out inverted.mkv
    python3 examples/video/run.py --input movie.mp4 --size 1280x720 --out inv.mkv

With no --input it uses ffmpeg's testsrc2 pattern. The output is FFV1 in
Matroska (lossless: the test compares it bit for bit). Prints one line of
JSON: frames, seconds, frames/s and the workers' CPU seconds.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import ipcress

HERE = Path(__file__).resolve().parent


def cli_path():
    env = os.environ.get("IPCRESS_BIN")
    if env:
        return env
    repo = HERE.parents[1]
    for p in (repo / "target/release/ipcress", repo / "target/debug/ipcress"):
        if p.exists():
            return str(p)
    found = shutil.which("ipcress")
    if not found:
        sys.exit("ipcress binary not found: cargo build -p ipcress-cli, or set IPCRESS_BIN")
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", help="video file (default: ffmpeg's testsrc2)")
    ap.add_argument("--size", default="320x240", help="WxH of the frames")
    ap.add_argument("--rate", default="25")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the test video")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ring", type=int, default=32 << 20, help="bytes of each stream's ring")
    ap.add_argument("--out", required=True)
    ap.add_argument("--codec", default="ffv1", help="ffmpeg video codec of the output")
    a = ap.parse_args(argv)
    w, h = (int(x) for x in a.size.split("x"))
    frame = w * h * 3
    cli = cli_path()
    root = Path(tempfile.mkdtemp(prefix="ipcress-video-", dir="/dev/shm"))
    env = dict(os.environ, IPCRESS_DIR=str(root))
    procs = []
    try:
        ring = max(a.ring, 1 << (4 * frame).bit_length())
        src = ipcress.Stream.create("frames", root=root, size=ring, checksum="none")
        dst = ipcress.Stream.create("inverted", root=root, size=ring, checksum="none")
        dst.consumer("enc").close()  # holds the output ring until encoded
        bounds = root / "bounds"
        np.zeros(a.workers, dtype=np.uint64).tofile(bounds)

        t0 = time.monotonic()
        workers = [
            subprocess.Popen(
                [sys.executable, str(HERE / "invert.py"), str(root), "frames", "inverted",
                 str(frame), str(i), str(bounds)],
                stdout=subprocess.PIPE, text=True,
            )
            for i in range(a.workers)
        ]
        procs += workers
        # Every member must have joined before frames come (a group with no
        # live member does not hold the ring).
        while sum(1 for c in src.stat()["consumers"] if c["kind"] == "member" and c["alive"]) < a.workers:
            if any(p.poll() is not None for p in workers):
                sys.exit("a worker failed to start")
            time.sleep(0.01)

        get = subprocess.Popen(
            [cli, "get", "inverted", "--consumer", "enc", "-f", "--record-size", str(frame)],
            stdout=subprocess.PIPE, env=env,
        )
        enc = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", a.size, "-r", a.rate, "-i", "-", "-c:v", a.codec, a.out],
            stdin=get.stdout,
        )
        get.stdout.close()
        procs += [get, enc]
        inp = ["-i", a.input] if a.input else [
            "-f", "lavfi", "-i", f"testsrc2=size={a.size}:rate={a.rate}", "-t", str(a.seconds)]
        dec = subprocess.Popen(
            ["ffmpeg", "-v", "error", *inp, "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", a.size, "-"],
            stdout=subprocess.PIPE,
        )
        put = subprocess.Popen(
            [cli, "put", "frames", "--record-size", str(frame)], stdin=dec.stdout, env=env)
        dec.stdout.close()
        procs += [dec, put]
        if put.wait() != 0 or dec.wait() != 0:
            sys.exit("decoding into the stream failed")
        src.producer().send(b"")  # the end: passed from worker to worker
        frames, cpu = 0, 0.0
        for p in workers:
            out, _ = p.communicate()
            if p.returncode != 0:
                sys.exit("a worker failed")
            n, c = out.split()
            frames, cpu = frames + int(n), cpu + float(c)
        # All frames are in the output stream: stop `get` once it has
        # passed the last one (its saved position reaches the tail).
        end = dst.tail
        while next(c["position"] for c in dst.stat()["consumers"] if c["name"] == "enc") < end:
            if get.poll() is not None:
                sys.exit("ipcress get ended early")
            time.sleep(0.01)
        get.send_signal(signal.SIGINT)
        if get.wait() != 0 or enc.wait() != 0:
            sys.exit("encoding failed")
        secs = time.monotonic() - t0
        print(json.dumps({
            "frames": frames, "seconds": round(secs, 3), "fps": round(frames / secs, 1),
            "workers": a.workers, "worker_cpu_seconds": round(cpu, 3),
            "worker_cpu_ms_per_frame": round(1000 * cpu / max(frames, 1), 3),
        }))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
