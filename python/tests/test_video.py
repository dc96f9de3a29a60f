"""The video example end to end on a generated test video: the output has
every frame, in order, and each is the exact inverse of the input frame."""

import hashlib
import json
import subprocess
import sys

import numpy as np

from conftest import REPO, find_cli

W, H, RATE, SECONDS = 160, 120, 25, 3
FRAME = W * H * 3


def decode(args):
    r = subprocess.run(
        ["ffmpeg", "-v", "error", *args, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert len(r.stdout) % FRAME == 0
    return np.frombuffer(r.stdout, np.uint8).reshape(-1, FRAME)


def test_video_pipeline_inverts_every_frame_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("IPCRESS_BIN", find_cli())
    out = tmp_path / "inverted.mkv"
    r = subprocess.run(
        [sys.executable, str(REPO / "examples/video/run.py"), "--size", f"{W}x{H}",
         "--rate", str(RATE), "--seconds", str(SECONDS), "--workers", "3",
         "--ring", str(1 << 20), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    expected = decode(["-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={RATE}", "-t", str(SECONDS)])
    assert len(expected) == RATE * SECONDS
    got = decode(["-i", str(out)])
    assert report["frames"] == len(expected)
    assert len(got) == len(expected), "frame count"
    want = [hashlib.sha256((255 - f).tobytes()).hexdigest() for f in expected]
    have = [hashlib.sha256(f.tobytes()).hexdigest() for f in got]
    # Every frame inverted exactly, and in the input's order.
    assert have == want
