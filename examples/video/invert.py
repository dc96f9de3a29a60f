"""One worker of the video pipeline's Python stage: a member of group
"invert" of the input stream, it inverts each RGB frame with numpy straight
from shared memory into a frame reserved in the output stream.

Frames reach the group's members out of order; the output must keep the
input's order. Reservations take their place in the output stream in the
order they are made, so a worker reserves the output frame for input
position p only once every other worker is known to hold, or to be about to
receive, only positions after p: each worker publishes such a lower bound
in a small shared array (`bounds`, one uint64 per worker): its consumer's
position while it holds nothing (the next position it can be given), the
position of the frame it holds, and p + 1 once it has reserved for p. An
empty record marks the end of the input: the worker that gets it passes it
on to the next one and stops.

Usage: invert.py ROOT IN OUT FRAME_BYTES WORKER_INDEX BOUNDS_FILE
"""

import sys
import time

import numpy as np

import ipcress

DONE = np.uint64(2**64 - 1)


def main():
    root, src, dst, frame_bytes, me, bounds_file = sys.argv[1:7]
    frame_bytes, me = int(frame_bytes), int(me)
    bounds = np.memmap(bounds_file, dtype=np.uint64, mode="r+")
    others = np.ones(len(bounds), dtype=bool)
    others[me] = False
    alone = not others.any()
    inp = ipcress.Stream.open(src, root=root)
    out = ipcress.Stream.open(dst, root=root).producer()
    c = inp.group("invert")
    frames = 0
    cpu = time.process_time()
    while True:
        bounds[me] = c.position
        m = c.recv(timeout=0.01)
        if m is None:
            continue  # the bound is refreshed: the group moved on
        p = m.position
        bounds[me] = p
        if len(m) == 0:
            # The end: pass it on to the next member, and stop.
            m.release()
            bounds[me] = DONE
            inp.producer().send(b"")
            break
        # Wait for our turn: nobody may still reserve for an earlier frame.
        while alone is False and bounds[others].min() <= p:
            time.sleep(0.0001)
        r = out.reserve(frame_bytes)
        bounds[me] = p + 1  # our turn is over: any next frame of ours is after p
        dst_frame = np.frombuffer(r, np.uint8)
        np.subtract(255, np.frombuffer(m, np.uint8), out=dst_frame)
        del dst_frame
        r.commit()
        m.release()
        frames += 1
    cpu = time.process_time() - cpu
    print(f"worker {me}: {frames} frames, {cpu:.3f} s CPU", file=sys.stderr)
    print(frames, cpu)


if __name__ == "__main__":
    main()
