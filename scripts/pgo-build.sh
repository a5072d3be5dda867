#!/usr/bin/env bash
# scripts/pgo-build.sh: a profile-guided (PGO) release build of `tenantscale`, trained on the
# project's own demo, written to target/pgo/release/tenantscale.
#
# 1. an instrumented release build (target/pgo-gen);
# 2. training: `tenantscale demo` with that build (gateway, autoscaler, pods, loadgen and
#    llm-sim all count, each process writing its own profile);
# 3. the profiles merged with llvm-profdata;
# 4. the release build again, laid out and inlined by the profile (target/pgo).
#
# The training is the demo, not a benchmark: the gateway there authenticates API keys, rejects
# over-limit tenants and follows pods that start and drain, so the profile describes the stack's
# own work rather than one benchmark's request.
#
# Needs an llvm-profdata that reads rustc's profiles (LLVM 19 or later; rustc 1.95 is LLVM 22):
#   apt-get install -y llvm-19        (or set LLVM_PROFDATA=/path/to/llvm-profdata)
# Takes about 13 minutes on 2 cores (two full release builds and a 1-minute demo).
# Usage: scripts/pgo-build.sh [--train-duration 1m] [-- extra cargo build arguments]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
train=1m
while [ $# -gt 0 ]; do
  case $1 in
    --train-duration)
      [ $# -ge 2 ] || { echo "--train-duration needs a value, e.g. 1m" >&2; exit 2; }
      train=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

find_profdata() {
  if [ -n "${LLVM_PROFDATA:-}" ]; then echo "$LLVM_PROFDATA"; return; fi
  local v
  for v in 22 21 20 19; do
    for p in "llvm-profdata-$v" "/usr/lib/llvm-$v/bin/llvm-profdata"; do
      command -v "$p" >/dev/null && { echo "$p"; return; }
    done
  done
  echo "no llvm-profdata of LLVM 19 or later: apt-get install -y llvm-19, or set LLVM_PROFDATA" >&2
  exit 2
}
profdata=$(find_profdata)
# Checked now, not after the first build: rustc 1.95's profiles need LLVM 19 or later to read.
major=$({ "$profdata" --version 2>/dev/null || true; } | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p')
[ -n "$major" ] && [ "$major" -ge 19 ] ||
  { echo "$profdata is not an llvm-profdata of LLVM 19 or later (apt-get install -y llvm-19)" >&2; exit 2; }

out="$root/target/pgo"
raw="$out/profiles"
rm -rf "$raw" && mkdir -p "$raw"
cd "$root"

echo "== 1/4 instrumented build (target/pgo-gen)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" CARGO_TARGET_DIR="$root/target/pgo-gen" \
  cargo build --release --locked -p tenantscale "$@"

echo "== 2/4 training: tenantscale demo --duration $train" >&2
LLVM_PROFILE_FILE="$raw/%p-%m.profraw" "$root/target/pgo-gen/release/tenantscale" demo \
  --duration "$train" --plain --report "$out/training-report" >"$out/training.log" 2>&1 ||
  { echo "the training demo failed; its output: $out/training.log" >&2; exit 1; }
tail -5 "$out/training.log" >&2

echo "== 3/4 merging $(find "$raw" -name '*.profraw' | wc -l) profiles with $profdata" >&2
"$profdata" merge -o "$out/tenantscale.profdata" "$raw"/*.profraw ||
  { echo "$profdata could not read rustc's profiles: use LLVM 19 or later" >&2; exit 2; }

echo "== 4/4 profile-guided build (target/pgo)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$out/tenantscale.profdata" CARGO_TARGET_DIR="$out" \
  cargo build --release --locked -p tenantscale "$@"
rm -rf "$raw"
echo "built $out/release/tenantscale (profile: $out/tenantscale.profdata)" >&2
