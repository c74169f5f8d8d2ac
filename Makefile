# The set-up is two commands: `make run` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run test lint eval bench chaos clean-test

help:
	@echo "make run     start the pipeline (RabbitMQ and PostgreSQL must answer, or Docker be there)"
	@echo "make test    run every test against the real RabbitMQ and PostgreSQL"
	@echo "make lint    rustfmt and clippy"
	@echo "make eval FILE=path.jsonl   score the classifier on a labelled file"
	@echo "make bench   throughput and latency (release build)"
	@echo "make chaos   crash and fault test (CHAOS_N complaints)"

run:
	@scripts/deps.sh
	@cargo build --bins --quiet
	@scripts/run.sh

test:
	@scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

FILE ?= services/verifier/tests/fixtures/holdout.jsonl
eval:
	@cargo run --quiet --bin verifier -- eval $(FILE)

bench:
	@scripts/deps.sh
	@cargo build --release --bins --quiet
	@BENCH_BIN_DIR=target/release target/release/lapor-bench
	@target/release/sla-bench

CHAOS_N ?= 20000
chaos:
	@scripts/deps.sh
	@cargo build --release --bins --quiet
	@CHAOS_N=$(CHAOS_N) CHAOS_BIN_DIR=target/release target/release/lapor-chaos

clean-test:
	@cargo run --quiet --bin lapor-tests-clean
