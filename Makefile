# What CI runs is `.ci/run`: the README's test command plus `make check`.
CARGO ?= cargo

.PHONY: build test check run bench fmt soak torture fuzz miri

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

# ---- reliability (issue 9) ----------------------------------------------------------------
# `make soak DURATION=SECS [SOAK_BACKENDS="uring epoll"]`: mixed load for DURATION seconds per
# backend; samples RSS, socket counts, active connections and buffer-ring occupancy every second
# into target/soak/soak-BACKEND.csv and prints a flatness verdict (tests/soak.rs).
DURATION ?= 600
SOAK_BACKENDS ?= uring epoll

soak:
	SOAK_DURATION=$(DURATION) SOAK_BACKENDS="$(SOAK_BACKENDS)" SOAK_DIR=$(CURDIR)/target/soak \
		$(CARGO) test --release --test soak -- --ignored --nocapture --test-threads 1
