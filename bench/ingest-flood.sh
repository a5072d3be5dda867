#!/usr/bin/env bash
# bench/ingest-flood.sh: other tenants' query p99 on one pod, without and with one tenant
# flooding it with ingests, measured in one run (rounds alternate, so drift hits both alike).
#
# One `tenantscale serve` (SQLite store, --trust-tenant-header) with ten calm tenants and one
# flooder. Each round: wrk queries the calm tenants (round robin, X-Tenant-ID) for --seconds,
# once alone and once while FLOODERS curl loops post large ingests for flood-1 (replacing the
# same document ids, so the flood keeps writing without reaching its quota). Prints each
# run's p99, the medians, and the ratio flood/alone.
#
# Prerequisites: apt-get install -y wrk curl (and python3); a release build:
#   cargo build --release -p tenantscale
# Usage: bench/ingest-flood.sh [--rounds N] [--seconds S] [--flooders N] [--connections N]
#        [--port P]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="$root/target/release/tenantscale"
rounds=3 seconds=20 flooders=8 connections=16 port=18480
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
    --seconds) seconds="${2:?--seconds needs a value}"; shift 2 ;;
    --flooders) flooders="${2:?--flooders needs a value}"; shift 2 ;;
    --connections) connections="${2:?--connections needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "build first: cargo build --release -p tenantscale" >&2; exit 2; }
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y $tool)" >&2; exit 2; }
done

data="$(mktemp -d)"
pod_pid="" flood_pids=()
stop_flood() {
  for p in "${flood_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${flood_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  flood_pids=()
}
cleanup() {
  stop_flood
  [ -n "$pod_pid" ] && kill "$pod_pid" 2>/dev/null && wait "$pod_pid" 2>/dev/null
  rm -rf "$data"
}
trap cleanup EXIT
addr="127.0.0.1:$port"

# Ten calm gold tenants and the flooder, in bronze with a quota the flood never reaches.
{
  echo "cluster: {cores: 8, memory: 16Gi}"
  echo "tiers:"
  echo "  gold: {weight: 3, share: 0.6, maxShare: 0.3}"
  echo "  bronze: {weight: 1, share: 0.2, maxShare: 0.1, quota: {documents: 100000, bytes: 1Gi}}"
  echo "tenants:"
  for i in $(seq 1 10); do echo "  - {id: calm-$i, tier: gold}"; done
  echo "  - {id: flood-1, tier: bronze}"
  echo "pool: {maxReplicas: 4, slotsPerPod: 8, queuePerTenant: 100}"
} >"$data/catalog.yaml"

"$bin" serve -c "$data/catalog.yaml" --listen "$addr" --store "sqlite://$data/store.db" \
  --trust-tenant-header --warm-up 0 --drain-grace 0 2>"$data/pod.log" &
pod_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://$addr/ready" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$addr/ready" >/dev/null || { echo "the pod did not start:" >&2; cat "$data/pod.log" >&2; exit 1; }

post() { # tenant, body file
  curl -s -o /dev/null -w '%{http_code}' -H "X-Tenant-ID: $1" \
    -H 'Content-Type: application/json' --data-binary "@$2" "http://$addr/v1/documents"
}
for i in $(seq 1 10); do
  printf '{"documents":[{"id":"handbook","text":"calm-%s keeps its ledger, invoices and refunds policy here."}]}' "$i" \
    >"$data/calm.json"
  [ "$(post "calm-$i" "$data/calm.json")" = 200 ] || { echo "could not ingest calm-$i" >&2; exit 1; }
done
# The flood's body: 40 documents of 6,000 characters (about 0.25 MB, 320 chunks to embed).
python3 - "$data/flood.json" <<'EOF'
import json, sys
words = " ".join(f"word{(i * 7919) % 100000:05d}" for i in range(600))
docs = [{"id": f"flood-{d}", "text": words} for d in range(40)]
json.dump({"documents": docs}, open(sys.argv[1], "w"))
EOF

cat >"$data/calm.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  local headers = {["Content-Type"] = "application/json", ["X-Tenant-ID"] = "calm-" .. (n % 10 + 1)}
  return wrk.format("POST", "/v1/query", headers, '{"query":"where is the refunds policy"}')
end
EOF

# p99 in milliseconds from `wrk --latency`'s distribution; a run with any failed calm query
# (non-2xx, socket error or timeout) stops the script: a fast failure is no latency.
p99() {
  local out
  out="$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$data/calm.lua" "http://$addr")"
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "calm queries failed:" >&2
    grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
    exit 1
  fi
  awk '$1 == "99%" {
      v = $2; unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
      if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000
      printf "%.2f\n", v
    }' <<<"$out"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

alone=() flooded=()
echo "round  calm p99 alone (ms)  calm p99 with flood (ms)"
for r in $(seq 1 "$rounds"); do
  a="$(p99)"
  for _ in $(seq 1 "$flooders"); do
    (while :; do post flood-1 "$data/flood.json" >/dev/null || true; done) &
    flood_pids+=($!)
  done
  sleep 1 # the flood under way before measuring
  f="$(p99)"
  stop_flood
  alone+=("$a") flooded+=("$f")
  printf '%-6s %-21s %s\n' "$r" "$a" "$f"
done
ma="$(printf '%s\n' "${alone[@]}" | median)"
mf="$(printf '%s\n' "${flooded[@]}" | median)"
echo
echo "median calm p99: alone $ma ms, with flood $mf ms; ratio $(awk -v a="$ma" -v f="$mf" 'BEGIN { printf "%.2f", (a > 0) ? f / a : 0 }')x"
echo "flood-1's storage: $(curl -s "http://$addr/metrics" | grep -E '^tenantscale_tenant_storage_(documents|bytes)\{tenant_id="flood-1"\}' | tr '\n' ' ')"
