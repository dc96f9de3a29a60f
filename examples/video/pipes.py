#!/usr/bin/env python3
"""The pipe version of the video pipeline, for comparison with run.py:
`ffmpeg | python stage | ffmpeg`, the stage reading each raw RGB frame from
its stdin into a numpy buffer, inverting it and writing it to its stdout.
Same options as run.py (no --workers: a pipe has one reader). Prints one
line of JSON like run.py."""

import argparse
import json
import subprocess
import sys
import time

STAGE = r"""
import sys, time, numpy as np
frame = int(sys.argv[1])
src, dst = np.empty(frame, np.uint8), np.empty(frame, np.uint8)
inp, out = sys.stdin.buffer, sys.stdout.buffer
n, cpu = 0, time.process_time()
mv = memoryview(src)
while True:
    got = 0
    while got < frame:
        k = inp.readinto(mv[got:])
        if not k:
            break
        got += k
    if got < frame:
        break
    np.subtract(255, src, out=dst)
    out.write(dst)
    n += 1
out.flush()
print(n, time.process_time() - cpu, file=sys.stderr)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--rate", default="25")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--codec", default="ffv1")
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    frame = w * h * 3
    inp = ["-i", a.input] if a.input else [
        "-f", "lavfi", "-i", f"testsrc2=size={a.size}:rate={a.rate}", "-t", str(a.seconds)]
    t0 = time.monotonic()
    dec = subprocess.Popen(
        ["ffmpeg", "-v", "error", *inp, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", a.size, "-"],
        stdout=subprocess.PIPE)
    stage = subprocess.Popen([sys.executable, "-c", STAGE, str(frame)], stdin=dec.stdout,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    dec.stdout.close()
    enc = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", a.size,
         "-r", a.rate, "-i", "-", "-c:v", a.codec, a.out], stdin=stage.stdout)
    stage.stdout.close()
    err = stage.stderr.read().decode()
    if stage.wait() or dec.wait() or enc.wait():
        sys.exit("pipeline failed: " + err)
    n, cpu = err.split()
    n, cpu = int(n), float(cpu)
    secs = time.monotonic() - t0
    print(json.dumps({"frames": n, "seconds": round(secs, 3), "fps": round(n / secs, 1),
                      "stage_cpu_seconds": round(cpu, 3),
                      "stage_cpu_ms_per_frame": round(1000 * cpu / max(n, 1), 3)}))


if __name__ == "__main__":
    main()
