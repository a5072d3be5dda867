#!/usr/bin/env bash
# bench/service-signed.sh: the pod's requests/s and p99 WITH gateway signatures, against the pod
# with --trust-tenant-header and the seed's FastAPI service, measured in one run (ratios).
#
# Targets, each started fresh per round (order rotated every round), all on 127.0.0.1 free ports:
#   ts-trust   tenantscale serve --trust-tenant-header (as bench/service.sh): X-Tenant-ID
#   ts-signed  tenantscale serve with a random --secret (given as TENANTSCALE_SECRET): every request
#              carries X-Tenantscale-{Tenant,Timestamp,Body-SHA256,Signature} (README, "Gateway ->
#              pod signatures"), pre-signed by python3 for each tenant right before each wrk run
#              (a replay within 30 s is accepted by design, so wrk may resend them)
#   seed-1w    the seed (../shared/bench/peers/seed_fastapi/app.py) under uvicorn, 1 worker, as the
#              shared rig starts it; skipped with a note if fastapi/uvicorn are not installed
# Load as the rig's service_bench.sh: wrk -t2 -c64 --latency, POST /v1/query (seed: /query) with
# the rig's body, tenant-00..tenant-49 (bench/catalog-50.yaml) with Zipf(s=1) popularity, the
# rig's random sequence. Pods: fresh empty SQLite store each (no documents, as bench/service.sh).
# Before measuring: one request must answer 200 (ts-signed: and a wrong signature 401). A pod
# run with any non-2xx answer or socket error fails (excluded from the medians; exit 1); the
# seed's non-2xx are its 429s (queue full), reported as in the rig.
#
# Usage: bench/service-signed.sh [--rounds N] [--duration S] [--quick]
#   --rounds N    rounds (3); --duration S  seconds per wrk run (10; below 25, so signatures made
#   just before a run stay valid); --quick  1 round of 3 s (a smoke test); -h, --help
# Env: BIN (default target/release/tenantscale), SHARED_BENCH (../shared/bench or ../../shared/bench), CONNS (64),
#   THREADS (2), TENANT_SKEW (1.0), SEED_WORK_SECONDS (0: no simulated work in the seed, as the
#   README's table), STARTUP_TIMEOUT (30), OUT_DIR (raw data; default under ${TMPDIR:-/tmp}).
# Prerequisites: wrk, curl, python3, setsid, timeout, ss; for the seed: pip install fastapi
#   'uvicorn[standard]' prometheus_client; a release build: cargo build --release -p tenantscale
set -u -o pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cmdline="$0 $*"
BIN="${BIN:-$root/target/release/tenantscale}"
# the rig beside the checkout (as bench/service.sh), or beside the worktrees' parent (/work/wt/NAME)
if [ -z "${SHARED_BENCH:-}" ]; then
  SHARED_BENCH="$root/../shared/bench"
  [ -d "$SHARED_BENCH" ] || [ ! -d "$root/../../shared/bench" ] || SHARED_BENCH="$root/../../shared/bench"
fi
SEED_DIR="$SHARED_BENCH/peers/seed_fastapi"
CATALOG="$here/catalog-50.yaml"
ROUNDS=3 DURATION=10
CONNS=${CONNS:-64} THREADS=${THREADS:-2} TENANTS=50 TENANT_SKEW=${TENANT_SKEW:-1.0}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
export SEED_WORK_SECONDS=${SEED_WORK_SECONDS:-0}
BODY='{"query":"SELECT count(*) FROM events WHERE day = 1"}'   # the rig's (lib/tenants.lua)
MAX_SKEW=30          # the pod's window either side (crates/core/src/auth.rs MAX_SKEW_SECONDS)

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="${2:?--rounds needs a value}"; shift 2 ;;
    --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
    --quick) ROUNDS=1; DURATION=3; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "--rounds: a positive integer, not '$ROUNDS'" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ ]] && ((DURATION < 25)) ||
  { echo "--duration: whole seconds from 1 to 24 (signatures are valid ${MAX_SKEW} s), not '$DURATION'" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no tenantscale binary at $BIN: cargo build --release -p tenantscale, or set BIN" >&2; exit 2; }
[ -f "$CATALOG" ] || { echo "missing $CATALOG" >&2; exit 2; }
for t in wrk curl python3 setsid timeout ss; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 2; }
done

TARGETS=(ts-trust ts-signed)
SEED_NOTE=""
if [ ! -f "$SEED_DIR/app.py" ]; then
  SEED_NOTE="seed-1w skipped: no $SEED_DIR/app.py (set SHARED_BENCH)"
elif ! python3 -c "import fastapi, uvicorn, prometheus_client, uvloop, httptools" 2>/dev/null; then
  SEED_NOTE="seed-1w skipped: python deps missing (pip install fastapi 'uvicorn[standard]' prometheus_client)"
else
  TARGETS=(seed-1w ts-trust ts-signed)
fi

OUT_DIR=${OUT_DIR:-${TMPDIR:-/tmp}/tenantscale-bench/service-signed-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT_DIR" || exit 2
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(16))')   # 32 bytes, this run only

# ------------------------------------------------------------------ processes we started
PGIDS=() WATCHDOG=""
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT_DIR/bench.log" >&2; }
start_group() { # logfile cmd... -> LAST_PID (leader of a new session and process group)
  local logf=$1; shift
  setsid "$@" >"$logf" 2>&1 </dev/null &
  LAST_PID=$!; PGIDS+=("$LAST_PID")
}
stop_group() {
  local pid=$1 i keep=() p
  kill -TERM -- "-$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  for p in "${PGIDS[@]}"; do [[ $p != "$pid" ]] && keep+=("$p"); done
  PGIDS=("${keep[@]}")
}
cleanup() {
  local p; trap - EXIT INT TERM
  for p in "${PGIDS[@]}"; do stop_group "$p"; done
  [ -n "$WATCHDOG" ] && { kill -TERM -- "-$WATCHDOG" 2>/dev/null; wait "$WATCHDOG" 2>/dev/null; }
}
trap cleanup EXIT
trap 'log "interrupted (or the watchdog fired)"; exit 130' INT TERM
BOUND=$((60 + ROUNDS * ${#TARGETS[@]} * (DURATION + STARTUP_TIMEOUT + 40)))
setsid bash -c "sleep $BOUND; kill -TERM $$" </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

free_port() { # a port nobody listens on now (the kernel's pick), checked with ss
  local p i
  for ((i = 0; i < 20; i++)); do
    p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return 0; }
  done
  return 1
}
session_ticks() { # CPU ticks (user+system) of every process in session $1
  local sid=$1 total=0 f line
  for f in /proc/[0-9]*/stat; do
    read -r line <"$f" 2>/dev/null || continue
    set -- ${line##*) }
    [[ ${4:-} == "$sid" ]] && total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

# ------------------------------------------------------------------ wrk script and signer
# The rig's lib/tenants.lua request mix, line for line (same weights, seeds, sequence and RESULT
# line); python3 replaces the `signed` line with each tenant's pre-signed headers for ts-signed.
LUA_TEMPLATE="$OUT_DIR/tenants.lua"
cat >"$LUA_TEMPLATE" <<'LUA'
-- wrk script of bench/service-signed.sh: the shared rig's lib/tenants.lua (50 tenants, Zipf),
-- sending X-Tenant-ID, or, when `signed` is filled in, each tenant's X-Tenantscale-* headers.
local signed = nil -- @SIGNED@
local ntenants = tonumber(os.getenv("TENANTS") or "50")
local skew     = tonumber(os.getenv("TENANT_SKEW") or "1.0")
local body     = os.getenv("QUERY_BODY")
local seqlen   = 10007
local counter  = 0
threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  threads[counter] = thread
end
local reqs, seq, pos = {}, {}, 0
function init(args)
  math.randomseed(12345 + (tid or 1) * 7919)
  local w, total = {}, 0
  for k = 1, ntenants do w[k] = 1.0 / (k ^ skew); total = total + w[k] end
  local cum, acc = {}, 0
  for k = 1, ntenants do acc = acc + w[k] / total; cum[k] = acc end
  for k = 1, ntenants do
    local id = string.format("tenant-%02d", k - 1)
    local headers = {["Content-Type"] = "application/json"}
    if signed then
      local s = signed[id]
      headers["X-Tenantscale-Tenant"] = id
      headers["X-Tenantscale-Timestamp"] = s[1]
      headers["X-Tenantscale-Body-SHA256"] = s[2]
      headers["X-Tenantscale-Signature"] = s[3]
    else
      headers["X-Tenant-ID"] = id
    end
    reqs[k] = wrk.format("POST", nil, headers, body)
  end
  for i = 1, seqlen do
    local r, k = math.random(), 1
    while k < ntenants and r > cum[k] do k = k + 1 end
    seq[i] = k
  end
  pos = (tid or 1) * 997 % seqlen
end
function request()
  pos = pos + 1
  if pos > seqlen then pos = 1 end
  return reqs[seq[pos]]
end
function done(summary, latency, requests)
  local e, dur = summary.errors, summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f bytes=%d p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f mean_us=%.1f err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, dur, summary.requests / dur, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
LUA

SIGNER="$OUT_DIR/sign.py"
cat >"$SIGNER" <<'PY'
# sign.py TEMPLATE.lua OUT.lua OUT.curl CATALOG METHOD TARGET NTENANTS  (env: SECRET, QUERY_BODY)
# Signs the fixed body for tenant-00..tenant-NN at the current second (README, "Gateway -> pod
# signatures"): hex HMAC-SHA256(secret, tenant \n METHOD \n target \n timestamp \n sha256(body)).
# Writes the wrk script (the template with `signed` filled in) and tenant-00's curl headers;
# prints the timestamp.
import hashlib, hmac, os, re, sys, time
tpl, out_lua, out_curl, catalog, method, target, n = sys.argv[1:8]
secret, body = os.environ["SECRET"].encode(), os.environ["QUERY_BODY"].encode()
def sign(key, tenant, method, target, ts, digest):
    msg = "\n".join([tenant, method, target, str(ts), digest]).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()
# the README's test vector (crates/core/src/auth.rs), so that a wrong message cannot go unnoticed
d = hashlib.sha256(b'{"query":"hello"}').hexdigest()
assert d == "96780c036a8123d5389f2883041c9c4fa71b034b2ae4e9990a60cf5e2535c5cc", d
assert sign(b"0123456789abcdef", "media-1", "POST", "/v1/query?x=1", 1700000000, d) == \
    "384982cca7975158e8b9d42ab06a8ef27990af3e330e839622884ea9520c2c20"
tenants = ["tenant-%02d" % k for k in range(int(n))]
ids = set(re.findall(r"\{id:\s*([^,}\s]+)", open(catalog).read()))
missing = [t for t in tenants if t not in ids]
assert not missing, f"not in {catalog}: {missing}"
ts = int(time.time())
digest = hashlib.sha256(body).hexdigest()
rows = {t: (str(ts), digest, sign(secret, t, method, target, ts, digest)) for t in tenants}
table = "local signed = {\n" + "".join(
    f'  ["{t}"] = {{"{a}", "{b}", "{c}"}},\n' for t, (a, b, c) in rows.items()) + "}"
lua = open(tpl).read()
assert "local signed = nil -- @SIGNED@" in lua
open(out_lua, "w").write(lua.replace("local signed = nil -- @SIGNED@", table))
a, b, c = rows[tenants[0]]
open(out_curl, "w").write(
    f"X-Tenantscale-Tenant: {tenants[0]}\nX-Tenantscale-Timestamp: {a}\n"
    f"X-Tenantscale-Body-SHA256: {b}\nX-Tenantscale-Signature: {c}\n")
print(ts)
PY

# ------------------------------------------------------------------ targets
start_target() { # name port store_dir -> SUT_PID, STARTUP_S; 1 if it does not answer /health
  local name=$1 port=$2 store=$3 t0 deadline
  t0=$(date +%s.%N)
  case "$name" in
    ts-trust)
      echo "$BIN serve -c $CATALOG --listen 127.0.0.1:$port --store sqlite://$store/store.db --trust-tenant-header" >"$OUT_DIR/$name.cmd"
      start_group "$OUT_DIR/$name.log" env -u TENANTSCALE_SECRET -u TENANTSCALE_NEXT_SECRET \
        -u TENANTSCALE_REDIS -u TENANTSCALE_LLM_URL \
        "$BIN" serve -c "$CATALOG" --listen "127.0.0.1:$port" --store "sqlite://$store/store.db" --trust-tenant-header ;;
    ts-signed)
      echo "TENANTSCALE_SECRET=<random 32 hex> $BIN serve -c $CATALOG --listen 127.0.0.1:$port --store sqlite://$store/store.db" >"$OUT_DIR/$name.cmd"
      start_group "$OUT_DIR/$name.log" env -u TENANTSCALE_NEXT_SECRET -u TENANTSCALE_REDIS -u TENANTSCALE_LLM_URL \
        TENANTSCALE_SECRET="$SECRET" \
        "$BIN" serve -c "$CATALOG" --listen "127.0.0.1:$port" --store "sqlite://$store/store.db" ;;
    seed-1w) # the rig's uvicorn_argv 1 PORT (service_bench.sh), PIN=none
      local uv=(python3 -m uvicorn app:app --app-dir "$SEED_DIR" --host 127.0.0.1 --port "$port"
        --workers 1 --loop uvloop --http httptools --no-access-log --log-level warning)
      echo "SEED_WORK_SECONDS=$SEED_WORK_SECONDS ${uv[*]}" >"$OUT_DIR/$name.cmd"
      start_group "$OUT_DIR/$name.log" "${uv[@]}" ;;
  esac
  SUT_PID=$LAST_PID
  deadline=$((SECONDS + STARTUP_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$port/health") == 200 ]]; then
      STARTUP_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'); return 0
    fi
    kill -0 "$SUT_PID" 2>/dev/null || break
    sleep 0.05
  done
  log "$name: no 200 from /health within ${STARTUP_TIMEOUT}s; log tail:"; tail -5 "$OUT_DIR/$name.log" >&2
  stop_group "$SUT_PID"; return 1
}
post() { # url [curl args...] -> HTTP status of POST with the rig's body
  local url=$1; shift
  curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST -H 'Content-Type: application/json' "$@" \
    --data-binary "$BODY" "$url"
}
res_field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" ${1#RESULT}"; }

# ------------------------------------------------------------------ main
{
  echo "### bench/service-signed.sh $(date -u +%FT%TZ)"
  echo
  echo "command: \`$cmdline\` (BIN=$BIN)"
  echo
  echo "nproc=$(nproc), loadavg before=$(cut -d' ' -f1-3 /proc/loadavg), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'),"\
    "POST ${DURATION}s x $ROUNDS rounds, -c$CONNS -t$THREADS, $TENANTS tenants zipf s=$TENANT_SKEW, SEED_WORK_SECONDS=$SEED_WORK_SECONDS"
} >"$OUT_DIR/header.md"
log "out dir: $OUT_DIR; targets=${TARGETS[*]} rounds=$ROUNDS duration=${DURATION}s (watchdog ${BOUND}s)"
[ -n "$SEED_NOTE" ] && log "$SEED_NOTE"
echo "round,target,ok,startup_s,rps,ok_rps,non2xx_rps,p50_us,p99_us,p999_us,requests,non2xx,sock_errors,cpu_us_per_req,note" >"$OUT_DIR/runs.csv"
FAILED=0
row() { echo "$r,$name,$1" >>"$OUT_DIR/runs.csv"; }   # a line of runs.csv for round $r, target $name
n=${#TARGETS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  order=()
  for ((j = 0; j < n; j++)); do order+=("${TARGETS[$(((j + r - 1) % n))]}"); done
  for name in "${order[@]}"; do
    port=$(free_port) || { log "round $r: $name: no free port"; FAILED=1; row "0,,,,,,,,,,,,no port"; continue; }
    store=$(mktemp -d "$OUT_DIR/store-$name-r$r.XXXX")
    if ! start_target "$name" "$port" "$store"; then
      FAILED=1; row "0,,,,,,,,,,,,no start"; continue
    fi
    base="http://127.0.0.1:$port"
    qpath=/v1/query; [[ $name == seed-* ]] && qpath=/query
    lua=$LUA_TEMPLATE
    check=""
    case "$name" in
      ts-signed)
        # sign now: the run (wrk starts right after these checks) ends within DURATION s + a few
        lua="$OUT_DIR/r$r-$name.lua"; hdrs="$OUT_DIR/r$r-$name.curl-headers"
        if ! sign_ts=$(SECRET=$SECRET QUERY_BODY=$BODY python3 "$SIGNER" "$LUA_TEMPLATE" "$lua" "$hdrs" "$CATALOG" POST "$qpath" "$TENANTS" 2>"$OUT_DIR/r$r-sign.err"); then
          log "round $r: signing failed:"; cat "$OUT_DIR/r$r-sign.err" >&2; FAILED=1; stop_group "$SUT_PID"; row "0,$STARTUP_S,,,,,,,,,,,sign failed"; continue
        fi
        good=$(post "$base$qpath" -H @"$hdrs")
        # the same headers with the signature's last hex digit changed
        awk '/^X-Tenantscale-Signature: / { c = substr($0, length($0)); $0 = substr($0, 1, length($0) - 1) (c == "0" ? "1" : "0") } 1' \
          "$hdrs" >"$hdrs.bad"
        badsig=$(post "$base$qpath" -H @"$hdrs.bad")
        unsigned=$(post "$base$qpath" -H 'X-Tenant-ID: tenant-00')
        [[ $good == 200 && $badsig == 401 && $unsigned == 401 ]] ||
          check="signed -> $good (want 200), wrong signature -> $badsig (want 401), X-Tenant-ID only -> $unsigned (want 401)" ;;
      *)
        good=$(post "$base$qpath" -H 'X-Tenant-ID: tenant-00')
        [[ $good == 200 ]] || check="X-Tenant-ID: tenant-00 -> $good (want 200)" ;;
    esac
    if [ -n "$check" ]; then
      log "round $r: $name: check failed, not measured: $check"; FAILED=1; stop_group "$SUT_PID"
      row "0,$STARTUP_S,,,,,,,,,,,check failed"; continue
    fi
    log "round $r: $name up in ${STARTUP_S}s; checks passed ($([[ $name == ts-signed ]] && echo "signed 200, wrong signature 401, X-Tenant-ID only 401" || echo "tenant-00 200"))"
    s0=$(session_ticks "$SUT_PID")
    TENANTS=$TENANTS TENANT_SKEW=$TENANT_SKEW QUERY_BODY=$BODY timeout -k 5 $((DURATION + 15)) \
      wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency -s "$lua" "$base$qpath" >"$OUT_DIR/r$r-$name.txt" 2>&1
    s1=$(session_ticks "$SUT_PID")
    end_ts=$(date +%s)
    stop_group "$SUT_PID"
    res=$(grep '^RESULT' "$OUT_DIR/r$r-$name.txt" | tail -1)
    if [ -z "$res" ]; then
      log "round $r: $name: wrk produced no result:"; tail -5 "$OUT_DIR/r$r-$name.txt" >&2; FAILED=1
      row "0,$STARTUP_S,,,,,,,,,,,no wrk result"; continue
    fi
    req=$(res_field "$res" requests); dur=$(res_field "$res" duration_s); non2xx=$(res_field "$res" err_status)
    sock=$(($(res_field "$res" err_connect) + $(res_field "$res" err_read) + $(res_field "$res" err_write) + $(res_field "$res" err_timeout)))
    ok=1 note=""
    if [[ $name == ts-* ]] && ((non2xx > 0 || sock > 0)); then
      ok=0 note="$non2xx non-2xx and $sock socket errors"
    fi
    if [[ $name == ts-signed ]] && ((end_ts - sign_ts >= MAX_SKEW)); then
      ok=0 note="${note:+$note; }the run ended $((end_ts - sign_ts)) s after signing (window ${MAX_SKEW} s)"
    fi
    ((ok)) || { FAILED=1; log "round $r: $name FAILED: $note"; }
    line=$(awk -v req="$req" -v dur="$dur" -v bad="$non2xx" -v ticks="$((s1 - s0))" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "%.1f,%.1f,%.1f", req / dur, (req - bad) / dur, bad / dur; printf "|%.1f", req ? ticks / hz * 1e6 / req : 0 }')
    row "$ok,$STARTUP_S,${line%|*},$(res_field "$res" p50_us),$(res_field "$res" p99_us),$(res_field "$res" p999_us),$req,$non2xx,$sock,${line#*|},$note"
    log "round $r: $(printf '%-9s' "$name") rps=${line%%,*} non-2xx=$non2xx sock_err=$sock p50=$(res_field "$res" p50_us)us p99=$(res_field "$res" p99_us)us cpu/req=${line#*|}us"
  done
done
echo "loadavg after=$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT_DIR/footer.txt"

python3 - "$OUT_DIR" "$ROUNDS" "$SEED_NOTE" <<'PY' | tee "$OUT_DIR/summary.md"
import csv, os, statistics, sys
out, rounds, seed_note = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = list(csv.DictReader(open(os.path.join(out, "runs.csv"))))
good = [r for r in rows if r["ok"] == "1"]
order = [t for t in ("seed-1w", "ts-trust", "ts-signed") if any(r["target"] == t for r in rows)]
def vals(t, k): return [float(r[k]) for r in good if r["target"] == t and r[k] != ""]
def med(t, k):
    v = vals(t, k); return statistics.median(v) if v else None
def ratio(a, b): return f"{a / b:.2f}" if a is not None and b else "-"
def ms(us): return f"{us / 1000:.2f}" if us is not None else "-"
print(open(os.path.join(out, "header.md")).read())
print("| target | req/s median (min–max) | non-2xx/s | p50 ms | p99 ms | CPU µs/req | req/s vs seed-1w | p99 vs seed-1w "
      "| req/s vs ts-trust | p99 vs ts-trust | CPU/req vs ts-trust | rounds ok |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in order:
    rps = vals(t, "rps")
    rng = f"{statistics.median(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f})" if rps else "-"
    nb, p50, p99, cpu = med(t, "non2xx_rps"), med(t, "p50_us"), med(t, "p99_us"), med(t, "cpu_us_per_req")
    vs_trust = t == "ts-signed"
    print(f"| {t} | {rng} | {f'{nb:,.0f}' if nb is not None else '-'} | {ms(p50)} | {ms(p99)} | "
          f"{f'{cpu:.1f}' if cpu is not None else '-'} | {ratio(med(t, 'rps'), med('seed-1w', 'rps'))} | "
          f"{ratio(p99, med('seed-1w', 'p99_us'))} | "
          f"{ratio(med(t, 'rps'), med('ts-trust', 'rps')) if vs_trust else ''} | "
          f"{ratio(p99, med('ts-trust', 'p99_us')) if vs_trust else ''} | "
          f"{ratio(cpu, med('ts-trust', 'cpu_us_per_req')) if vs_trust else ''} | "
          f"{sum(1 for r in good if r['target'] == t)}/{rounds} |")
# ts-signed / ts-trust within each round (the two runs are seconds apart, so drift cancels more)
pairs = []
for rnd in sorted({r["round"] for r in good}, key=int):
    by = {r["target"]: r for r in good if r["round"] == rnd}
    if "ts-signed" in by and "ts-trust" in by:
        s, t = by["ts-signed"], by["ts-trust"]
        pairs.append((rnd, float(s["rps"]) / float(t["rps"]), float(s["p99_us"]) / float(t["p99_us"])))
print()
if pairs:
    print("ts-signed / ts-trust per round: " + ", ".join(f"r{n} req/s {a:.2f} p99 {b:.2f}" for n, a, b in pairs)
          + f"; median req/s {statistics.median(a for _, a, _ in pairs):.2f}, p99 {statistics.median(b for _, _, b in pairs):.2f}")
print("Ratios are of medians over the rounds that passed. Pods: every run must be all 2xx (a non-2xx or socket "
      "error fails the round). seed-1w's non-2xx are its 429s (queue full), as in the shared rig. CPU µs/req: the "
      "target's process group (utime+stime from /proc) / requests. Tenants have no documents (request path only).")
if seed_note: print(f"\nNote: {seed_note}.")
print("\n" + open(os.path.join(out, "footer.txt")).read().strip() + f"; raw data in {out}")
PY
log "done; raw data in $OUT_DIR"
exit "$FAILED"
