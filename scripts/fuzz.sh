#!/usr/bin/env bash
# Fuzzes the config parser, the countdown checker and the safetensors reader with libFuzzer (clang, with AddressSanitizer
# and UBSan) for SECONDS each (default 20), starting from the committed seeds in fuzz/seeds/. A
# crash, a leak, an uncaught exception or undefined behaviour fails, leaving the input under
# OUT_DIR/<target>/ (make it a regression test). `make test` runs it through ctest.
#   scripts/fuzz.sh [OUT_DIR] [SECONDS]      (default: build/fuzz, 20)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/build/fuzz}"
seconds="${2:-20}"
cxx="$(command -v clang++ || true)"
if [ -z "$cxx" ]; then echo "fuzz: clang++ not found (scripts/setup.sh installs clang)" >&2; exit 1; fi
# fmt comes header-only from the torch wheel's include folder (the library links it from there too).
fmt_inc="$(ls -d "$here"/.venv/lib/python3*/site-packages/torch/include 2>/dev/null | head -1)"
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$here"
       -I"$fmt_inc" -DFMT_HEADER_ONLY)
mkdir -p "$out"
build() {  # target sources...
  local t="$1"; shift
  if [ ! -x "$out/$t" ] || [ -n "$(find "$@" -newer "$out/$t" 2>/dev/null)" ]; then
    "$cxx" "${flags[@]}" "$@" -o "$out/$t" -lyaml-cpp
  fi
}
build config_fuzz "$here/fuzz/config_fuzz.cpp" "$here/csrc/config/config.cpp"
build countdown_fuzz "$here/fuzz/countdown_fuzz.cpp" "$here/csrc/rl/tasks.cpp" "$here/csrc/config/config.cpp"
build safetensors_fuzz "$here/fuzz/safetensors_fuzz.cpp" "$here/csrc/train/safetensors_format.cpp"
export ASAN_OPTIONS="detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for t in config countdown safetensors; do
  work="$out/$t"
  rm -rf "$work" && mkdir -p "$work/corpus"
  echo "fuzz: ${t}_fuzz for ${seconds} s"
  "$out/${t}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" "$here/fuzz/seeds/$t" >"$work/log" 2>&1 || {
    tail -40 "$work/log"; echo "fuzz: ${t}_fuzz found a problem; the input is under $work/" >&2; exit 1; }
  grep -E "stat::number_of_executed_units" "$work/log" | sed "s/^/fuzz: ${t}_fuzz /"
done
echo "fuzz: no crash, leak, uncaught exception or undefined behaviour"
