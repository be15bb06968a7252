# What CI runs is `.ci/run`: the README's test command, `make check` and `make kernel-test`.
CARGO ?= cargo

.PHONY: build test check run bench bench-quick bench-smoke bench-features bench-peers fmt \
	soak torture fuzz miri kernel-test

build:
	$(CARGO) build --release

test:
	$(CARGO) test

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps
	# The server library alone: builds, lints, and pulls in neither clap nor hdrhistogram.
	$(CARGO) clippy --lib --no-default-features -- -D warnings
	! $(CARGO) tree --no-default-features -e normal --prefix none | grep -E '^(clap|hdrhistogram) '

run:
	$(CARGO) run --release

fmt:
	$(CARGO) fmt --all

# The comparison harness, benches/compare (README: "Comparing servers"). Every variable is
# optional; values must not contain single quotes. Servers are separated by `;`:
#   make bench CASES='50x128x1 100x64x16' DURATION=3 ROUNDS=3
#   make bench SERVERS='uring; epoll; batch=uring --batch-wait-us 50'
#   make bench PEERS='tokio=target/peers/release/tokio-echo'       (after `make bench-peers`)
# On a shared host, MAX_OTHER_CPUS=0.2 repeats runs during which other work used > 0.2 CPU.
# Other harness flags (`cargo bench --bench compare -- --help`) go in BENCH_ARGS.
# Results: target/bench/latest.md, latest.html (with charts) and target/bench/<timestamp>.json.
BENCH_FLAGS = $(if $(CASES),--cases '$(CASES)') $(if $(SERVERS),--servers '$(SERVERS)') \
	$(if $(PEERS),--peers '$(PEERS)') $(if $(ROUNDS),--rounds $(ROUNDS)) \
	--duration $(or $(DURATION),5) $(if $(WARMUP),--warmup $(WARMUP)) \
	$(if $(CLIENT_BACKEND),--client-backend $(CLIENT_BACKEND)) \
	$(if $(MAX_OTHER_CPUS),--max-other-cpus $(MAX_OTHER_CPUS)) $(BENCH_ARGS)

# The peers `make bench-peers` built, if any, unless PEERS is given (PEERS= compares none).
BUILT_PEERS = $(strip $(foreach p,tokio monoio epoll,$(if $(wildcard target/peers/release/$(p)-echo),$(if $(filter epoll,$(p)),epoll-echo,$(p))=target/peers/release/$(p)-echo;)))
PEERS ?= $(BUILT_PEERS)

bench:
	$(CARGO) bench --bench compare -- $(BENCH_FLAGS)

# Half a minute: two cases, 1 s windows (for trying things, not for figures).
bench-quick:
	$(MAKE) bench PEERS= CASES='$(or $(CASES),50x128x1 100x64x16)' DURATION=$(or $(DURATION),1) \
		WARMUP=$(or $(WARMUP),0.5)

# What CI runs through `cargo test`: the harness's self-check and one tiny case end to end.
bench-smoke:
	$(CARGO) test --bench compare

# Issue 6: each io_uring feature on and off, side by side in one run.
FEATURE_SERVERS = uring; batch=uring --batch-wait-us 50; coop=uring --ring-mode coop-taskrun; \
	plain=uring --ring-mode plain; sqpoll=uring --sqpoll; singleshot=uring --no-multishot-recv; \
	nobundle=uring --no-recv-bundle; inc=uring --buf-incremental; \
	ordinary=uring --no-direct-descriptors; \
	zc=uring --zc-threshold 1024; ringfd=uring --register-ring-fd; \
	copy=uring --buf-budget 0; ring4096=uring --buf-count 4096; threads2=uring --threads 2; epoll
bench-features:
	$(MAKE) bench PEERS= SERVERS='$(or $(SERVERS),$(FEATURE_SERVERS))' \
		CASES='$(or $(CASES),50x128x1 500x128x1 50x4096x1 100x64x16)' \
		DURATION=$(or $(DURATION),5)

# The peer echo servers of ../shared/peers (read-only there), built into target/peers.
PEERS_DIR ?= ../shared/peers
bench-peers:
	@failed=; for p in tokio-echo epoll-echo monoio-echo; do \
		$(CARGO) build --release --manifest-path $(PEERS_DIR)/$$p/Cargo.toml \
			--target-dir target/peers || failed="$$failed $$p"; \
	done; \
	ls target/peers/release/*-echo 2>/dev/null; \
	if [ -n "$$failed" ]; then echo "bench-peers: could not build:$$failed" >&2; exit 1; fi

# ---- reliability (issue 9) ----------------------------------------------------------------
# `make soak DURATION=SECS [SOAK_BACKENDS="uring epoll"]` (default 600): mixed load for DURATION s per
# backend; samples RSS, socket counts, active connections and buffer-ring occupancy every second
# into target/soak/soak-BACKEND.csv and prints a flatness verdict (tests/soak.rs).
SOAK_BACKENDS ?= uring epoll

soak:
	SOAK_DURATION=$(or $(DURATION),600) SOAK_BACKENDS="$(SOAK_BACKENDS)" SOAK_DIR=$(CURDIR)/target/soak \
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

# ---- kernel matrix (issue 17) ---------------------------------------------------------------
# `make kernel-test [KERNELS="6.1 6.12"] [CHECKS=REGEX]`: boots Debian's newest cloud kernel of
# each series under QEMU's emulation (no KVM needed) and runs probe, every protocol on every
# backend, the fallback flags, the pressure cases and io_uring switched off inside, over the
# VM's own loopback; prints a kernel x check table (target/kernel-test/report.md). Installs
# qemu-system-x86 and downloads the kernel and busybox-static packages with apt if missing.
KERNELS ?= 6.1 6.12
kernel-test:
	CARGO=$(CARGO) KERNELS="$(KERNELS)" CHECKS='$(CHECKS)' scripts/kernel-test.sh
