#!/usr/bin/env bash
# bench/service.sh: the tenantscale pod side by side with the seed's FastAPI service, using the
# shared rig (../shared/bench/service_bench.sh) on 127.0.0.1. Prints the rig's table (ratios
# against seed-1w, measured in one run).
#
# Prerequisites (the rig's): apt-get install -y wrk; pip install fastapi 'uvicorn[standard]'
#   prometheus_client httpx; and a release build: cargo build --release -p tenantscale
# Usage: [SEED_WORK_SECONDS=0] bench/service.sh [rig options, e.g. --quick or --rounds 3]
# (SEED_WORK_SECONDS=0: the seed does no work per query either, as in the README table.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
rig="${SHARED_BENCH:-$root/../shared/bench}/service_bench.sh"
bin="$root/target/release/tenantscale"
[ -x "$bin" ] || { echo "build first: cargo build --release -p tenantscale" >&2; exit 2; }
[ -x "$rig" ] || [ -f "$rig" ] || { echo "no bench rig at $rig (set SHARED_BENCH)" >&2; exit 2; }
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
export EXTRA_QUERY_PATH=/v1/query
exec bash "$rig" --targets "${TARGETS:-seed-1w,seed-2w}" \
  --service "ts=$bin serve -c $here/catalog-50.yaml --listen 127.0.0.1:{PORT} --store sqlite://$data/store.db --trust-tenant-header" "$@"
