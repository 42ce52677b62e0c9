#!/usr/bin/env bash
# `pip install` of tinyseek, tested from a clean copy (`make pip-check`, and ctest's pip_install_test):
#   1. copies this checkout's files (tracked and untracked, not ignored; `--head`: a clone of HEAD)
#      into a temporary folder;
#   2. makes a fresh venv there that sees torch, numpy and scikit-build-core of the project venv
#      (.venv) through a .pth file only, so that nothing is downloaded;
#   3. `pip install --no-build-isolation --no-deps` of the copy into it (ccache as `make build` uses
#      it: the build runs in <copy>/build-pip and finds torch under <copy>/.venv, at the same places
#      relative to the sources as in a checkout, so it reuses `make build`'s objects);
#   4. deletes the copy, then from another folder: `import tinyseek` loads the installed package and
#      its library, torch.ops.tinyseek.rms_norm runs, `tinyseek --help` and `tinyseek run` of a tiny
#      config work from the venv's bin/ (the report's plots too: the venv's Python draws them).
# Prints each phase's wall time; exits non-zero with a one-line reason on any failure.
# PIP_CHECK_KEEP=1 keeps the temporary folder.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$(date +%s)
phase_start=$START

fail() {
  echo "pip-check: FAILED: $*" >&2
  exit 1
}
phase() {  # phase NAME: prints the time of the phase that just ended
  local now
  now=$(date +%s)
  printf 'pip-check: %-40s %4d s\n' "$1" $((now - phase_start))
  phase_start=$now
}

MODE=worktree
[ "${1:-}" = "--head" ] && MODE=head

[ -x .venv/bin/python ] || fail ".venv/bin/python not found: run \`make setup\` first"
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || fail "cannot ask .venv/bin/python for its site-packages"
SITE_REAL=$(readlink -f "$SITE")
VENV_REAL=$(readlink -f .venv)
.venv/bin/python -c "import torch, numpy, scikit_build_core" 2>/dev/null ||
  fail "torch, numpy or scikit-build-core missing in .venv: run \`make setup\` first"
[ "${SITE_REAL#"$VENV_REAL"/}" != "$SITE_REAL" ] || fail "site-packages $SITE_REAL is not inside the venv $VENV_REAL"
SITE_IN_VENV=${SITE_REAL#"$VENV_REAL"/}  # lib/python3.X/site-packages

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinyseek-pip-check.XXXXXX") || fail "mktemp failed"
if [ "${PIP_CHECK_KEEP:-0}" = 1 ]; then
  echo "pip-check: keeping $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi
SRC=$WORK/src
VENV=$WORK/venv
ELSEWHERE=$WORK/elsewhere
mkdir -p "$SRC" "$ELSEWHERE"

# 1. The copy.
if [ "$MODE" = head ]; then
  git clone -q --no-hardlinks "$REPO" "$SRC" || fail "git clone of HEAD failed"
else
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar -c --null -T - -f - | tar -x -C "$SRC" -f - || fail "copying the working tree's files failed"
fi
phase "copy ($MODE) to $SRC"

# 2. The fresh venv. During the build, torch is seen at <copy>/.venv/... (a link to the project
# venv) like `make build` sees it at <checkout>/.venv/..., so that the compile commands match.
"$(readlink -f .venv/bin/python)" -m venv "$VENV" || fail "python -m venv $VENV failed"
VSITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || fail "fresh venv has no python"
ln -s "$VENV_REAL" "$SRC/.venv"
echo "$SRC/.venv/$SITE_IN_VENV" >"$VSITE/tinyseek-deps.pth"
"$VENV/bin/python" -c "import torch, scikit_build_core" || fail "the fresh venv does not see torch and scikit-build-core through its .pth"
phase "fresh venv $VENV"

# 3. The install.
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/tinyseek-ccache}
export CCACHE_BASEDIR=$SRC
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
unset TINYSEEK_LIBRARY TINYSEEK_BIN PYTHONPATH
ccache_counts() {  # "hits misses" of the cache so far
  ccache --print-stats 2>/dev/null | awk '$1 ~ /^(direct|preprocessed)_cache_hit$/ {h += $2}
    $1 == "cache_miss" {m += $2} END {print h + 0, m + 0}'
}
read -r hits0 misses0 <<<"$(ccache_counts)"
(cd "$ELSEWHERE" && "$VENV/bin/python" -m pip install --no-build-isolation --no-deps --disable-pip-version-check \
  -v "$SRC" >"$WORK/pip-install.log" 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
  grep -E "error|Error|FAILED" "$WORK/pip-install.log" | head -30 >&2
  tail -15 "$WORK/pip-install.log" >&2
  fail "pip install --no-build-isolation --no-deps of the copy exited $rc"
fi
read -r hits1 misses1 <<<"$(ccache_counts)"
phase "pip install (ccache: $((hits1 - hits0)) hits, $((misses1 - misses0)) misses)"

# 4. Without the copy, from another folder, torch seen through the project venv's real path.
rm -rf "$SRC"
echo "$SITE_REAL" >"$VSITE/tinyseek-deps.pth"
cd "$ELSEWHERE" || fail "cd $ELSEWHERE"
"$VENV/bin/python" - "$VSITE" <<'EOF' || fail "import tinyseek / torch.ops.tinyseek.rms_norm from the installed package failed"
import sys
from pathlib import Path

import torch
import tinyseek

site = Path(sys.argv[1]).resolve()
lib, pkg = Path(tinyseek.library_path).resolve(), Path(tinyseek.__file__).resolve()
assert lib == site / "tinyseek" / "libtinyseek.so", f"library_path {lib} is not the installed one in {site}"
assert pkg.parent == site / "tinyseek", f"tinyseek imported from {pkg}, not from {site}"
x, w = torch.randn(3, 64), torch.rand(64) + 0.5
y = torch.ops.tinyseek.rms_norm(x, w, 1e-6)
ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
assert torch.allclose(y, ref, atol=1e-5), (y - ref).abs().max()
print(f"pip-check: import tinyseek: {lib}; rms_norm matches the reference")
EOF
phase "import tinyseek, rms_norm"

export PATH="$VENV/bin:$PATH"
[ "$(command -v tinyseek)" = "$VENV/bin/tinyseek" ] || fail "tinyseek on PATH is $(command -v tinyseek), not $VENV/bin/tinyseek"
tinyseek --help >/dev/null || fail "tinyseek --help exited $?"
cat >tiny.yaml <<'EOF'
kind: pretrain
name: pipcheck
data: {source: synthetic, seq_len: 32, synthetic_bytes: 60000}
model: {d_model: 32, n_layers: 2, n_heads: 2, ffn_hidden: 64, attention: {kind: mha}}
train: {steps: 4, batch_size: 4, lr: 3.0e-3, warmup_steps: 2, eval_every: 2, eval_batches: 2, log_every: 2,
        checkpoint_every: 2}
EOF
tinyseek run tiny.yaml >"$WORK/run.log" 2>&1 || { tail -20 "$WORK/run.log" >&2; fail "tinyseek run of a tiny config exited non-zero"; }
grep -q '"status": *"completed"' runs/pipcheck/default/summary.json ||
  fail "tinyseek run: runs/pipcheck/default/summary.json does not say completed"
[ -s runs/pipcheck/plots/loss.png ] || { tail -20 "$WORK/run.log" >&2; fail "tinyseek run drew no runs/pipcheck/plots/loss.png (the Python helper)"; }
phase "tinyseek --help, tinyseek run"

echo "pip-check: passed in $(($(date +%s) - START)) s"
