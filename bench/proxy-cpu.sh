#!/usr/bin/env bash
# bench/proxy-cpu.sh: where a proxy's CPU per request goes, the gateway next to nginx, under the
# same load as bench/proxy.sh (wrk -t2 -c64, X-Tenant-ID over 50 Zipf tenants, three nginx
# backends; load and backends on CPU 0, the proxy on CPU 1 with one worker).
#
#   bench/proxy-cpu.sh              user and kernel CPU µs and minor page faults per request, from
#                                   /proc/PID/stat over each run's middle (ROUNDS=3 rounds × DUR=6 s,
#                                   rotating; medians)
#   bench/proxy-cpu.sh --callgrind  user-space instructions per request under valgrind's
#                                   callgrind, counted from when the proxy first answers (start-up
#                                   excluded; deterministic, unlike time on this shared machine;
#                                   valgrind's CPU has no SHA extensions, so the gateway's HMAC
#                                   counts in software there); the profiles stay in the out dir
#
#   bench/proxy-cpu.sh --cachegrind L1 instruction and data cache misses per request in
#                                   cachegrind's simulated caches (start-up included: this
#                                   valgrind cannot start counting later)
#   bench/proxy-cpu.sh --syscalls   system calls (perf stat) and TCP segments (nstat, the whole
#                                   machine's) per request, over each run's middle
#
# The split says which side a difference is on: both proxies make the same system calls per
# request, so the kernel's share differs between them only by this machine's run-to-run spread
# (one build's kernel time ranged 12.6–14.8 µs per request over five runs), while the
# user-space difference persists across runs.
# Prerequisites: apt-get install -y wrk nginx-light valgrind linux-perf iproute2;
# cargo build --release -p tenantscale
# Extra binaries to compare: GATEWAYS="name=/path/to/tenantscale ..." (default: this build).
# BARE=target/release/examples/bare_proxy adds hyper alone (cargo build --release -p
# tenantscale-gateway --example bare_proxy): a proxy of hyper's server and client alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
lua="${SHARED_BENCH:-$root/../shared/bench}/lib/tenants.lua"
mode=split
case "${1:-}" in
  --callgrind) mode=callgrind ;;
  --cachegrind) mode=cachegrind ;;
  --syscalls) mode=syscalls ;;
  "") ;;
  *) echo "usage: bench/proxy-cpu.sh [--callgrind | --cachegrind | --syscalls]" >&2; exit 2 ;;
esac
[ -f "$lua" ] || { echo "no wrk script at $lua (set SHARED_BENCH)" >&2; exit 2; }
for t in wrk nginx taskset curl; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 2; }; done
case $mode in *grind) command -v valgrind >/dev/null || { echo "missing valgrind" >&2; exit 2; } ;; esac
[ $mode != syscalls ] || { command -v perf >/dev/null && command -v nstat >/dev/null; } ||
  { echo "missing perf or nstat" >&2; exit 2; }
GATEWAYS=${GATEWAYS:-"gateway=$root/target/release/tenantscale"}
for g in $GATEWAYS ${BARE:+"bare=$BARE"}; do [ -x "${g#*=}" ] || { echo "build first: ${g#*=}" >&2; exit 2; }; done
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-6}
out=$(mktemp -d /tmp/tenantscale-proxy-cpu.XXXXXX)
pods=127.0.0.1:18281,127.0.0.1:18282,127.0.0.1:18283
started=()
cleanup() { for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$out/tmp"
temps() { for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $out/tmp/$t;"; done; }
{
  echo "worker_processes 1; user root; daemon off; pid $out/backend.pid; error_log $out/backend.err warn;"
  echo "events { worker_connections 8192; }"
  echo "http { access_log off; default_type application/json; keepalive_requests 1000000;"
  temps
  for p in 18281 18282 18283; do
    echo "  server { listen 127.0.0.1:$p backlog=4096; location / { return 200 '{\"ok\":true,\"backend\":$p,\"tenant\":\"\$http_x_tenant_id\"}\n'; } }"
  done
  echo "}"
} >"$out/backend.conf"
{
  echo "worker_processes 1; master_process off; user root; daemon off; pid $out/nginx.pid; error_log $out/nginx.err warn;"
  echo "events { worker_connections 8192; }"
  echo "http { access_log off; keepalive_requests 100000;"
  temps
  echo "  upstream tenants { hash \$http_x_tenant_id consistent;"
  echo "    server 127.0.0.1:18281; server 127.0.0.1:18282; server 127.0.0.1:18283; keepalive 128; }"
  echo "  server { listen 127.0.0.1:18290 backlog=4096; location / { proxy_pass http://tenants;"
  echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host;"
  echo "    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }"
} >"$out/nginx.conf"

taskset -c 0 nginx -c "$out/backend.conf" & started+=($!)

# start NAME BIN -> runs the proxy on CPU 1 (under callgrind in that mode); sets PROXY, PORT
start() {
  local name=$1 bin=$2 cmd
  if [ "$bin" = nginx ]; then cmd=(nginx -c "$out/nginx.conf"); PORT=18290
  elif [ "$name" = hyper-alone ]; then cmd=("$bin" 18300 "$pods"); PORT=18300
  else
    cmd=("$bin" gateway -c "$here/proxy-tenants.yaml" --listen 127.0.0.1:18300 --pods "$pods"
      --threads 1 --trust-tenant-header --secret bench-only-secret-0123456789); PORT=18300
  fi
  [ $mode = callgrind ] && cmd=(valgrind --tool=callgrind --instr-atstart=no
    "--callgrind-out-file=$out/$name.callgrind" "${cmd[@]}")
  [ $mode = cachegrind ] && cmd=(valgrind --tool=cachegrind --cache-sim=yes
    "--cachegrind-out-file=$out/$name.cachegrind" "${cmd[@]}")
  taskset -c 1 "${cmd[@]}" >"$out/$name.log" 2>&1 & PROXY=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null -H 'X-Tenant-ID: tenant-01' "http://127.0.0.1:$PORT/query" && return
    sleep 0.2
  done
  echo "$name did not answer on $PORT (log: $out/$name.log)" >&2; exit 1
}
stop() { kill -TERM "$PROXY"; wait "$PROXY" 2>/dev/null || true; }
load() { taskset -c 0 wrk -t2 -c64 -d"$1"s -s "$lua" "http://127.0.0.1:$PORT/query"; }

targets=("nginx=nginx" $GATEWAYS ${BARE:+"hyper-alone=$BARE"})
echo "# proxy-cpu $mode $(date -u +%FT%TZ), out dir $out" >&2
if [ $mode = callgrind ] || [ $mode = cachegrind ]; then
  if [ $mode = callgrind ]; then
    printf '| proxy | requests | user-space instructions per request |\n|---|---:|---:|\n'
  else
    printf '| proxy | requests | instructions | L1 instruction misses | L1 data read misses | L1 data write misses |\n|---|---:|---:|---:|---:|---:|\n'
  fi
  for t in "${targets[@]}"; do
    name=${t%%=*}; start "$name" "${t#*=}"
    [ $mode = cachegrind ] || callgrind_control --instr=on "$PROXY" >/dev/null 2>&1
    requests=$(load 8 | awk '/requests in/ {print $1}')
    stop
    # callgrind: "totals: Ir"; cachegrind: "summary: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw"
    awk -v name="$name" -v n="$requests" -v mode=$mode '
      mode == "callgrind" && /^(summary|totals):/ {printf "| %s | %d | %d |\n", name, n, $2 / n; exit}
      mode == "cachegrind" && /^summary:/ {printf "| %s | %d | %.0f | %.0f | %.0f | %.0f |\n", name, n, $2 / n, $3 / n, $6 / n, $9 / n}
    ' "$out/$name.$mode"
  done
  exit 0
fi

if [ $mode = syscalls ]; then
  printf '| proxy | requests/s | system calls per request | TCP segments out per request |\n|---|---:|---|---:|\n'
  for t in "${targets[@]}"; do
    name=${t%%=*}; start "$name" "${t#*=}"
    load 2 >/dev/null
    nstat -n
    load "$DUR" >"$out/$name.wrk" &
    w=$!
    sleep 1
    perf stat -x, -e 'syscalls:sys_enter_*' -p "$PROXY" -o "$out/$name.perf" -- sleep $((DUR - 2))
    wait $w
    # The segments over the whole run, the calls over its middle.
    nstat TcpOutSegs >"$out/$name.nstat"
    stop
    rps=$(awk '/Requests\/sec/ {print $2}' "$out/$name.wrk")
    requests=$(python3 -c "print($rps * ($DUR - 2))")
    calls=$(awk -F, -v n="$requests" '$3 ~ /sys_enter_/ && $1 > n / 100 {sub(/syscalls:sys_enter_/, "", $3); printf "%s%s %.2f", sep, $3, $1 / n; sep = ", "}' "$out/$name.perf")
    segs=$(awk -v n="$(awk '/requests in/ {print $1}' "$out/$name.wrk")" '/TcpOutSegs/ {printf "%.2f", $2 / n}' "$out/$name.nstat")
    printf '| %s | %.0f | %s | %s |\n' "$name" "$rps" "$calls" "$segs"
  done
  exit 0
fi

tck=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    name=${t%%=*}; start "$name" "${t#*=}"
    load 2 >/dev/null
    load "$DUR" >"$out/$name.$r.wrk" &
    w=$!
    sleep 0.5
    s0=$(cut -d' ' -f10,14,15 "/proc/$PROXY/stat"); t0=$(date +%s.%N)
    sleep $((DUR - 1))
    s1=$(cut -d' ' -f10,14,15 "/proc/$PROXY/stat"); t1=$(date +%s.%N)
    wait $w
    stop
    rps=$(awk '/Requests\/sec/ {print $2}' "$out/$name.$r.wrk")
    echo "$name $rps $s0 $s1 $t0 $t1" >>"$out/split.txt"
  done
done
python3 - "$out/split.txt" "$tck" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, f0, u0, k0, f1, u1, k1, t0, t1 = line.split()
    requests = float(rps) * (float(t1) - float(t0))
    tick = 1e6 / float(sys.argv[2])
    rows.setdefault(name, []).append(((int(u1) - int(u0)) * tick / requests, (int(k1) - int(k0)) * tick / requests, float(rps), (int(f1) - int(f0)) / requests))
print("| proxy | requests/s | user µs/request | kernel µs/request | total µs/request | page faults/request |")
print("|---|---:|---:|---:|---:|---:|")
for name, runs in rows.items():
    u, k, r, f = (statistics.median(x[i] for x in runs) for i in range(4))
    print(f"| {name} | {r:,.0f} | {u:.2f} | {k:.2f} | {statistics.median(x[0] + x[1] for x in runs):.2f} | {f:.3f} |")
PY
