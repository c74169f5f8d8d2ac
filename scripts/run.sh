#!/usr/bin/env bash
# `make run`: the four services in the foreground with readable, prefixed logs. Ctrl-C stops
# them all cleanly (SIGTERM: each finishes its in-flight work, flushes, exits).
set -uo pipefail
bin=${BIN_DIR:-target/debug}
pids=()

stop() {
  trap - INT TERM
  echo; echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait
  echo "stopped."
  exit 0
}
trap stop INT TERM

start() {
  local name=$1
  ( "$bin/$name" 2>&1 | sed -u "s/^/[$name] /" ) &
  pids+=($!)
}

# Intake first: it creates the database if missing and runs the migrations; the others
# start once it answers.
start intake
for _ in $(seq 1 60); do
  curl -fs "http://${LAPOR__HTTP__BIND:-127.0.0.1:8080}/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
start verifier
start distributor
start sla-monitor
echo "pipeline running: POST http://${LAPOR__HTTP__BIND:-127.0.0.1:8080}/v1/complaints  (Ctrl-C stops it)"
wait
