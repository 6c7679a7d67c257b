#!/usr/bin/env bash
# The engine under AddressSanitizer + UBSan: build it into engine/build/sanitize (incremental
# after the first time), run the hostile-model tests and the fuzz corpora against it, fuzz
# each target for FUZZ_SECONDS (default 15) and replay what the fuzzer found against it.
# Any memory error or undefined behaviour aborts with a report and fails this script.
# Run by `make sanitize` (and `make test`).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
BUILD="$ROOT/engine/build/sanitize"
PKG="$BUILD/pkg/walle_engine"
FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
start=$(date +%s)

echo "== sanitize: building the engine with ASan + UBSan in $BUILD"
cmake -S "$ROOT/engine" -B "$BUILD" -G Ninja -DWALLE_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython_EXECUTABLE="$PY" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$BUILD.cmake.log" 2>&1 ||
  { tail -40 "$BUILD.cmake.log"; exit 1; }
cmake --build "$BUILD" -j2 >"$BUILD.build.log" 2>&1 || { tail -60 "$BUILD.build.log"; exit 1; }

# A package tree: the sources' Python files beside the sanitized _core.
rm -rf "$PKG"
mkdir -p "$PKG"
for f in "$ROOT"/engine/src/walle_engine/*; do ln -s "$f" "$PKG/"; done
rm -f "$PKG"/_core*.so
cp "$BUILD"/_core*.so "$PKG/"

SAN_PYTHONPATH="$BUILD/pkg"
SAN_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so)"
# Python itself leaks by design at exit; a refused huge allocation is a MemoryError, not a crash.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1:symbolize=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
sanitized() { PYTHONPATH="$SAN_PYTHONPATH" LD_PRELOAD="$SAN_PRELOAD" "$@"; }
sanitized "$PY" -c "import walle_engine._core as c; assert c.__file__.startswith('$BUILD'), c.__file__"

echo "== sanitize: the engine's own tests, hostile model files and fuzz corpora under ASan + UBSan"
# The engine's tests but the model zoo and ONNX backend suites (minutes of large models
# that the regular build runs) and the packaging probe (it times the FMA peak): the
# arithmetic, array, image, kernel, fused-kernel, budget and hostile-input suites.
T="$ROOT/engine/tests"
sanitized "$PY" -m pytest -q -p no:cacheprovider "$T/test_atomic.py" "$T/test_np.py" "$T/test_cv.py" \
  "$T/test_budget.py" "$T/test_conv_kernels.py" "$T/test_fused.py" "$T/test_hostile_shapes.py" \
  "$T/test_model_file_hostile.py" "$T/test_fuzz_targets.py"

# Fuzzing is coverage-guided only without the preloaded gcc ASan runtime (it would shadow
# libFuzzer's coverage hooks), so each target first fuzzes the regular build for
# FUZZ_SECONDS, growing a scratch corpus, and then every input of that corpus and of the
# committed one is replayed against the sanitized build.
echo "== sanitize: fuzzing, ${FUZZ_SECONDS}s per target, then a sanitized replay"
for target in "$ROOT"/engine/fuzz/fuzz_*.py; do
  name="$(basename "$target" .py)"
  name="${name#fuzz_}"
  work="$BUILD/fuzz/$name"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  fail() {
    tail -60 "$work/$1.log"
    echo "fuzz target $name failed ($1); reproducer(s) in $work/artifacts: $(ls "$work/artifacts")"
    echo "once fixed, keep one as engine/fuzz/corpus/$name/regress-<what> (the tests replay it)"
    exit 1
  }
  # New inputs go to the scratch corpus; the committed seeds are only read. A process
  # stuck after a crash (a heap-corrupting bug can deadlock malloc) is killed, not awaited.
  timeout -s KILL $((FUZZ_SECONDS + 120)) "$PY" "$target" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096 -timeout=20 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$ROOT/engine/fuzz/corpus/$name" \
    >"$work/fuzz.log" 2>&1 || fail fuzz
  grep -E "^#[0-9]+" "$work/fuzz.log" | tail -1 || true
  sanitized timeout -s KILL 600 "$PY" "$target" -runs=0 -rss_limit_mb=4096 -timeout=20 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$ROOT/engine/fuzz/corpus/$name" \
    >"$work/replay.log" 2>&1 || fail replay
  echo "  $name: $(ls "$work/corpus" | wc -l) new inputs, replayed under ASan + UBSan"
done
echo "== sanitize: passed in $(($(date +%s) - start)) s"
