#!/usr/bin/env bash
# `make test`: every test of the workspace against the real RabbitMQ and PostgreSQL.
set -euo pipefail
scripts/deps.sh
# The harness creates and deletes vhosts through the management API when it answers.
cargo build --workspace --tests --bins --quiet
target/debug/lapor-tests-clean
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
