"""Shared fixtures: a private stream root per test, the `ipcress` CLI
binary, and child Python processes with a watchdog."""

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_cli():
    """The `ipcress` binary: $IPCRESS_BIN, else the workspace's target
    directory, else PATH. Missing is a failure, not a skip."""
    env = os.environ.get("IPCRESS_BIN")
    if env:
        return env
    for p in (REPO / "target" / "debug" / "ipcress", REPO / "target" / "release" / "ipcress"):
        if p.exists():
            return str(p)
    found = shutil.which("ipcress")
    if found:
        return found
    pytest.fail("the ipcress binary is missing: run `cargo build -p ipcress-cli` or set IPCRESS_BIN")


@pytest.fixture
def cli():
    return find_cli()


@pytest.fixture
def root():
    # Under /dev/shm like real streams, unique per test, removed after.
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    d = base / f"ipcress-pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


WATCHDOG = 60  # seconds: a hung child fails the test instead of hanging CI


def child(code, *args, **kw):
    """Start `python -c code args...` (code dedented); stdout/stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finish(p, timeout=WATCHDOG):
    """Wait for a child; fail with its stderr if it fails or hangs."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"child hung (watchdog {timeout}s); stderr:\n{err}")
    assert p.returncode == 0, f"child exited {p.returncode}; stderr:\n{err}"
    return out


def run_child(code, *args, timeout=WATCHDOG):
    return finish(child(code, *args), timeout)
