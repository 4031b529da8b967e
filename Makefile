# telepipe — common tasks. `make help` lists them.
.PHONY: help run sandbox fmt lint test bench up

help:           ## this list
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run:            ## run the gateway (embedded mode) on 127.0.0.1:8081
	cargo run --release -- serve

sandbox:        ## run the fake Telegram on 127.0.0.1:8082
	cargo run --release -- sandbox

fmt:            ## format the code
	cargo fmt --all

lint:           ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test:           ## every test (what CI runs)
	cargo test --workspace

bench:          ## passthrough benchmark: direct vs through the gateway
	cargo run --release -p telepipe-bench -- passthrough

up:             ## the distributed deployment (docker-compose.yml arrives with the Kafka/ScyllaDB engines)
	@test -f docker-compose.yml && docker compose up || echo "no docker-compose.yml yet"
