# What CI runs is `.ci/run`: the README's test command plus `make check`.
CARGO ?= cargo

.PHONY: build test check run bench fmt

build:
	$(CARGO) build --release

test:
	$(CARGO) test

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

run:
	$(CARGO) run --release

fmt:
	$(CARGO) fmt --all

bench: build
	@echo "the comparison harness arrives with the epoll backend; see README"
