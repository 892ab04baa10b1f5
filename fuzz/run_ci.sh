#!/usr/bin/env bash
# Short, time-boxed fuzzing of every target (about 45 s in all), for CI.
# Crash inputs are written to fuzz/crashes/TARGET/; copy each into tests/fuzz_regressions/TARGET/
# (fuzz/README.md) so that the test suite replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
seconds="${FUZZ_SECONDS_PER_TARGET:-4}"

if ! "$python" -c "import atheris" 2>/dev/null; then
    echo "+ atheris is not installed: trying once"
    .venv/bin/pip install -q atheris || echo "atheris did not install: using the hypothesis fallback"
fi

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
"$python" fuzz/fuzz.py --write-seeds "$corpus"

status=0
for target in $("$python" fuzz/fuzz.py --list); do
    mkdir -p "fuzz/crashes/$target"
    echo "+ fuzz $target for ${seconds}s"
    if ! "$python" fuzz/fuzz.py "$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
        -artifact_prefix="fuzz/crashes/$target/" "$corpus/$target" >"$corpus/$target.log" 2>&1; then
        echo "FUZZ CRASH in $target: input(s) in fuzz/crashes/$target/"
        tail -40 "$corpus/$target.log"
        status=1
    else
        grep -E "^Done|^fallback" "$corpus/$target.log" || true
    fi
    rmdir "fuzz/crashes/$target" 2>/dev/null || true
done
rmdir fuzz/crashes 2>/dev/null || true
exit "$status"
