# Shared by the intake benchmarks (bench-intake, bench-intake-ab, bench-replicas), which
# source it from the repository's top directory: the hook they post, a hoist
# configuration that serves its project, and small helpers.
# shellcheck shell=bash

body="$PWD/tests/fixtures/pipeline_tag_manual.json"
export BENCH_BODY="$body" BENCH_TOKEN="bench-token-not-secret"
bench_project=$(python3 -c "import json;print(json.load(open('$body'))['project']['path_with_namespace'])")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_http() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
# field NAME LINE: the number after NAME= in a RESULT line
field() { sed -E "s/.*[ ]$1=([0-9.]+).*/\\1/" <<<" $2"; }

# measure PID PORT: one wrk run of the load (CONNS connections, DURATION seconds) against
# 127.0.0.1:PORT; prints its RESULT line with the CPU the process PID spent per request
measure() {
  local pid=$1 port=$2 before after out
  before=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s scripts/bench/post.lua "http://127.0.0.1:$port" | grep '^RESULT')
  after=$(cpu_ticks "$pid")
  echo "$out cpu_us_per_req=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$(field requests "$out")" 'BEGIN{printf "%.1f", t/hz*1e6/n}')"
}

# hoist_config PORT STORE_URL: a hoist.toml listening on 127.0.0.1:PORT, serving the hook's project
hoist_config() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
[store]
url = "$2"
[gitlab]
url = "http://127.0.0.1:9"
token = "env:BENCH_TOKEN"
[[projects]]
path = "$bench_project"
webhook_token = "env:BENCH_TOKEN"
TOML
}
