#!/usr/bin/env bash
# Builds the Python package and runs python/tests under other CPythons, each
# in its own venv (target/venv-py3.X): the version-specific builds for 3.9
# and 3.10, or any interpreter given (docs/PYTHON.md, "Build").
#
#   bash python/test-versions.sh                      # pyenv's 3.9 and 3.10
#   bash python/test-versions.sh python3.12 /opt/py/bin/python3.13
#
# Not part of .ci/run: a CI machine need not have these interpreters.
# Exits 2 if an interpreter is missing (before building anything), 1 if a
# build or a test fails under any of them.
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# == 0)); then
    set -- /root/.pyenv/versions/3.9.18/bin/python3.9 /root/.pyenv/versions/3.10.13/bin/python3.10
fi

pythons=()
for arg in "$@"; do
    if ! py=$(command -v "$arg"); then
        echo "test-versions.sh: no Python interpreter '$arg' (install it, e.g. with pyenv, or pass another)" >&2
        exit 2
    fi
    pythons+=("$py")
done

# The tests run the CLI too.
cargo build -q -p ipcress-cli
export IPCRESS_BIN="${IPCRESS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/ipcress}"
mkdir -p target

# One interpreter: venv, package, test tools, pytest. set -e does not apply
# inside a function called from `if`, hence the explicit returns.
# Sets `log` to its pytest output.
test_one() {
    local py=$1 ver venv
    log=""
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || return 1
    venv=target/venv-py$ver
    echo "== Python $ver ($py) in $venv"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install -q --upgrade pip || return 1
    "$venv/bin/python" -m pip install -q numpy pytest || return 1
    # pyproject.toml picks the build for this version (abi3 from 3.11).
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./python || return 1
    log=target/pytest-py$ver.log
    "$venv/bin/python" -m pytest -q python/tests 2>&1 | tee "$log" || return 1
}

results=()
failed=0
for py in "${pythons[@]}"; do
    if test_one "$py"; then
        results+=("ok      $py: $(tail -n 1 "$log")")
    else
        results+=("FAILED  $py${log:+: $(tail -n 1 "$log")}")
        failed=1
    fi
done

echo "== summary"
printf '%s\n' "${results[@]}"
exit "$failed"
