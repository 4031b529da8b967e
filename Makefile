# telepipe — common tasks. `make help` lists them.
.PHONY: help run sandbox fmt lint test test-kafka bench up
SHELL := /bin/bash

help:           ## this list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run:            ## run the gateway (embedded mode) on 127.0.0.1:8081
	cargo run --release -- serve

sandbox:        ## run the fake Telegram on 127.0.0.1:8082
	cargo run --release -- sandbox

fmt:            ## format the code
	cargo fmt --all

lint:           ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test:           ## every test (the README's command; .ci/run also runs test-kafka)
	cargo test --workspace

test-kafka:     ## the end-to-end suite with ingest and processors apart on a local Tansu broker
	@read -r pid port < <(bash scripts/kafka-broker.sh); \
	trap "kill $$pid" EXIT; \
	TELEPIPE_TEST_KAFKA=127.0.0.1:$$port cargo test -p bus --test kafka && \
	TELEPIPE_TEST_SPLIT=1 TELEPIPE_TEST_BUS=kafka://127.0.0.1:$$port cargo test -p telepipe-tests

bench:          ## passthrough benchmark: direct vs embedded vs Kafka (local Tansu broker)
	@read -r pid port < <(bash scripts/kafka-broker.sh); \
	trap "kill $$pid" EXIT; \
	cargo run --release -p telepipe-bench -- passthrough --kafka 127.0.0.1:$$port

up:             ## Kafka, ScyllaDB and the roles in containers (needs TELEPIPE_SEAL_KEY and Docker)
	docker compose up --build
