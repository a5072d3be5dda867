#!/usr/bin/env bash
# bench/generate.sh: 200 ms of waiting per query on both sides, at equal concurrency.
#   seed:        the seed's FastAPI service (../shared/bench/peers/seed_fastapi), one uvicorn
#                worker, SEED_WORK_SECONDS=0.2: one asyncio.sleep(0.2) per query, one at a
#                time per tenant (so up to 50 concurrent for 50 tenants).
#   tenantscale: `serve` with 50 slots (bench/catalog-50.yaml with slotsPerPod: 50) and
#                generation through `tenantscale llm-sim --latency-ms 200`.
# wrk, 64 connections, 50 tenants cycled, DURATION seconds (10) each, one after the other.
# Reports requests/s and p50/p99 as wrk sees them, and answered/s: the success counter of
# total_queries_processed on /metrics after the run / duration. The seed answers "queued"
# at once and processes later; tenantscale's 200 answers carry the generated answer.
#
# Prerequisites: wrk, python3 with fastapi uvicorn prometheus_client, and
#   cargo build --release -p tenantscale
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
seed_dir="${SHARED_BENCH:-$root/../shared/bench}/peers/seed_fastapi"
bin="$root/target/release/tenantscale"
duration="${DURATION:-10}"
[ -x "$bin" ] || { echo "build first: cargo build --release -p tenantscale" >&2; exit 2; }
[ -f "$seed_dir/app.py" ] || { echo "no seed service at $seed_dir (set SHARED_BENCH)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "missing wrk" >&2; exit 2; }

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

cat >"$work/post.lua" <<'LUA'
local path, body = os.getenv("QUERY_PATH"), os.getenv("QUERY_BODY")
local reqs, n = {}, 0
function init(args)
  for k = 0, 49 do
    reqs[k] = wrk.format("POST", path, {["Content-Type"] = "application/json",
      ["X-Tenant-ID"] = string.format("tenant-%02d", k)}, body)
  end
end
function request() n = (n + 1) % 50; return reqs[n] end
LUA

processed() { curl -fs "$1/metrics" | awk '/^total_queries_processed(_total)?\{.*status="success"/ { s += $NF } END { printf "%d", s }'; }

run() { # name url path body
  local before after out rps p50 p99
  before=$(processed "$2")
  out=$(QUERY_PATH="$3" QUERY_BODY="$4" wrk -t2 -c64 -d"${duration}s" --latency -s "$work/post.lua" "$2")
  sleep 1 # let queued work finish counting (the seed processes after answering)
  after=$(processed "$2")
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  printf '| %s | %s | %.1f | %s | %s |\n' "$1" "$rps" "$(bc -l <<<"($after - $before) / $duration")" "$p50" "$p99"
}

sed 's/slotsPerPod: 8/slotsPerPod: 50/' "$here/catalog-50.yaml" >"$work/catalog.yaml"
"$bin" llm-sim --listen 127.0.0.1:19101 --latency-ms 200 2>"$work/llm.log" & pids+=($!)
"$bin" serve -c "$work/catalog.yaml" --listen 127.0.0.1:19102 --store "sqlite://$work/store.db" \
  --trust-tenant-header --warm-up 0 --llm-url http://127.0.0.1:19101/v1/chat/completions 2>"$work/ts.log" & pids+=($!)
(cd "$seed_dir" && SEED_WORK_SECONDS=0.2 exec python3 -m uvicorn app:app --host 127.0.0.1 --port 19103 \
  --workers 1 --no-access-log --log-level warning) 2>"$work/seed.log" & pids+=($!)
wait_http http://127.0.0.1:19102/health
wait_http http://127.0.0.1:19103/metrics

echo "| target | requests/s | answered/s | p50 | p99 |"
echo "| --- | ---: | ---: | ---: | ---: |"
run "seed, 1 worker, sleep 0.2 s" http://127.0.0.1:19103 /query '{"query":"SELECT count(*) FROM events WHERE day = 1"}'
run "tenantscale, 50 slots, llm-sim 0.2 s" http://127.0.0.1:19102 /v1/query '{"query":"SELECT count(*) FROM events WHERE day = 1","generate":true}'
