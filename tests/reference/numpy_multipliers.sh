#!/usr/bin/env bash
# numpy_multipliers.sh — the C re-implementation of numpy's default_rng stream (src/ngram_hash.c)
# against numpy itself: tests/reference/numpy_multipliers.py draws ~200 random multiplier cases
# with numpy, tests/reference/nprng_check compares them with ngram_hash_init.
# Args (as every tests/<label>/*.sh): $1 engram binary, $2 data dir (unused), $3 mpirun (unused).
# Env: ENGRAM_PYTHON (default /usr/bin/python3); NPRNG_CHECK, else $(dirname $1)/tests/nprng_check.
# Exit 77 (skipped) when that python has no numpy.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${ENGRAM_PYTHON:-/usr/bin/python3}
check=${NPRNG_CHECK:-$(dirname "$1")/tests/nprng_check}

if ! "$python" -c 'import numpy' 2>/dev/null; then
    echo "SKIP: $python has no numpy (Debian: apt-get install python3-numpy)"
    exit 77
fi
if [ ! -x "$check" ]; then
    echo "FAIL: $check not found; build the nprng_check target or set NPRNG_CHECK"
    exit 1
fi
echo "numpy $("$python" -c 'import numpy; print(numpy.__version__)'), checker $check"
"$python" "$here/numpy_multipliers.py" 200 | "$check"
