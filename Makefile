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

# `make torture [TORTURE_SCALE=N]`: long, large and privileged scenarios on both backends
# (resets mid-send, tiny SO_SNDBUF, 1 B/s readers, 10,000-connection slowloris, connect storms,
# a tiny CQ, UDP floods, packet loss, rate limits and delay in a private netns).
torture:
	CARGO=$(CARGO) scripts/torture.sh

# `make miri`: the pure modules (conn, protocol, token, stats) under Miri: their unit tests and
# the property tests (src/conn/props.rs, tests/props.rs; fewer cases under Miri). The protocols'
# own randomised tests (`random_*`, and the exhaustive 8 KiB head test) take hours under Miri and
# are skipped there; src/conn/props.rs covers the same properties with fewer cases.
MIRI_TOOLCHAIN ?= nightly
miri:
	rustup component add --toolchain $(MIRI_TOOLCHAIN) miri rust-src
	$(CARGO) +$(MIRI_TOOLCHAIN) miri test --test props
	$(CARGO) +$(MIRI_TOOLCHAIN) miri test --lib -- conn:: protocol:: token:: stats:: \
		--skip protocol::framed::tests::random_ --skip protocol::http::tests::random_ \
		--skip heads_up_to_8_kib

# `make fuzz [FUZZ_SECS=60]`: coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the HTTP and
# framed protocols and the connection state machine, FUZZ_SECS seconds per target (fuzz/).
FUZZ_SECS ?= 60
FUZZ_TOOLCHAIN ?= nightly
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	for t in http framed conn; do \
		$(CARGO) +$(FUZZ_TOOLCHAIN) fuzz run $$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done
