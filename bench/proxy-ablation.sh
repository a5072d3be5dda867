#!/usr/bin/env bash
# bench/proxy-ablation.sh: what each part of the gateway's own per-request work costs, in
# user-space instructions per request (bench/proxy-cpu.sh --callgrind: the same load, nginx
# alongside), measured by switching that part off in a bench-only build.
#
# The build is HEAD with bench/proxy-ablation.patch applied, in a temporary git worktree, built
# into target/ablation (a full build the first time). The patch adds switches read from
# TS_ABLATE; it is never part of the product, because each switch removes a guarantee:
#   notimeout     no timeout on a pod's response
#   nohdrtimeout  no timeout on a client's request head (hyper's timer)
#   nometrics     no per-request metrics
#   nosign        no X-Forwarded-For, tenant or signature headers on the upstream request
#   noheaders     the client's headers are not copied to the upstream request
# Prerequisites: those of bench/proxy-cpu.sh --callgrind.
# Usage: bench/proxy-ablation.sh [SWITCHES ...]  (default: none, each alone, then all together;
#        several at once as one comma-separated argument)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
all=notimeout,nohdrtimeout,nometrics,nosign,noheaders
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(none ${all//,/ } "$all")
tree=$(mktemp -d /tmp/tenantscale-ablation.XXXXXX)
git -C "$root" worktree add -q --detach "$tree" HEAD
trap 'git -C "$root" worktree remove --force "$tree"' EXIT
git -C "$tree" apply "$here/proxy-ablation.patch" || {
  echo "bench/proxy-ablation.patch no longer applies to HEAD: remake it from the gateway's code" >&2
  exit 1
}
cargo build --release -q -p tenantscale --manifest-path "$tree/Cargo.toml" --target-dir "$root/target/ablation"
bin=$root/target/ablation/release/tenantscale
printf '| switched off | requests | user-space instructions per request |\n|---|---:|---:|\n'
for run in "${runs[@]}"; do
  switches=$run; [ "$run" = none ] && switches=""
  TS_ABLATE=$switches GATEWAYS="gateway=$bin" "$here/proxy-cpu.sh" --callgrind 2>/dev/null |
    awk -v run="$run" -F'|' '$2 ~ /gateway/ {printf "| %s |%s|%s|\n", run, $3, $4} $2 ~ /nginx/ {nginx = $0} END {print nginx > "/dev/stderr"}'
done
