#!/bin/sh
# The long fuzz run (issue 6): the fuzz suite with many more inputs per parser, plus the
# header and adaptive property tests. Prints hypothesis' statistics: the inputs tried per
# parser ("N passing, 0 failing"). pytest-timeout is off: at this size one test takes minutes.
# Usage: benchmarks/fuzz_run.sh [EXAMPLES]   (default 10000)
set -eu
cd "$(dirname "$0")/.."
EXAMPLES="${1:-10000}"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(python --version 2>&1), hypothesis $(python -c 'import hypothesis; print(hypothesis.__version__)')"
echo "RATELIMIT_CLIENT_FUZZ_EXAMPLES=$EXAMPLES"
start=$(date +%s)
RATELIMIT_CLIENT_FUZZ_EXAMPLES="$EXAMPLES" python -m pytest tests/test_fuzz.py tests/test_headers.py tests/test_adaptive.py \
    -p no:randomly -p no:cacheprovider --timeout=0 --hypothesis-show-statistics -q
echo "wall: $(( $(date +%s) - start )) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
