#!/usr/bin/env bash
# bench/proxy.sh: the tenantscale gateway side by side with nginx and HAProxy, using the shared
# rig (../shared/bench/proxy_bench.sh) on 127.0.0.1: three nginx backends, wrk with X-Tenant-ID
# for tenant-00…tenant-49 (Zipf), ratios against nginx measured in one run.
#
# The gateway runs in trusted-header mode with bench/proxy-tenants.yaml (limits above the
# offered load): authentication by header, admission, bounded-load routing, signing and
# metrics still run on every request.
#
# Prerequisites (the rig's): apt-get install -y wrk nginx-light haproxy; and a release build:
#   cargo build --release -p tenantscale
# When the profile-guided build exists (scripts/pgo-build.sh), it runs too, as tenantscale-pgo,
# in the same rounds.
# Usage: bench/proxy.sh [rig options, e.g. --quick, --rounds 3, --pin none]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
rig="${SHARED_BENCH:-$root/../shared/bench}/proxy_bench.sh"
bin="$root/target/release/tenantscale"
[ -x "$bin" ] || { echo "build first: cargo build --release -p tenantscale" >&2; exit 2; }
[ -f "$rig" ] || { echo "no bench rig at $rig (set SHARED_BENCH)" >&2; exit 2; }
args="gateway -c $here/proxy-tenants.yaml --listen 127.0.0.1:{PORT} --pods {BACKENDS} --threads {WORKERS} --trust-tenant-header --secret bench-only-secret-0123456789"
proxies=(--proxy "tenantscale=$bin $args")
pgo="$root/target/pgo/release/tenantscale"
if [ -x "$pgo" ]; then
  proxies+=(--proxy "tenantscale-pgo=$pgo $args")
  [ "$pgo" -nt "$bin" ] || echo "note: $pgo is older than $bin (rebuild: scripts/pgo-build.sh)" >&2
fi
exec bash "$rig" "${proxies[@]}" "$@"
