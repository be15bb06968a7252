#!/usr/bin/env bash
# `make torture [TORTURE_SCALE=N]`: the long, large and privileged reliability scenarios of
# issue 9, on both backends: the `#[ignore]`d tests of tests/hostile.rs, tests/limits.rs,
# tests/udp_abuse.rs and tests/netfaults.rs. `cargo test` runs quick versions of most of them.
#
# The packet-loss scenarios need nftables, and all network faults need a private network
# namespace (root, or unprivileged user namespaces): a scenario that cannot have them prints
# `SKIPPED ... <reason>` instead of failing. Output goes to the terminal and target/torture.log;
# the figures (one `[backend] ...` line per scenario) are repeated at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nft >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "torture: installing nftables (the packet-loss scenarios use it)" >&2
    apt-get install -y -q nftables >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nftables >/dev/null 2>&1; } \
      || echo "torture: could not install nftables; the loss scenarios will be skipped" >&2
  else
    echo "torture: nft not found and cannot install it; the loss scenarios will be skipped" >&2
  fi
fi

mkdir -p target
log=target/torture.log
export TORTURE_SCALE="${TORTURE_SCALE:-1}"
echo "torture: kernel $(uname -r), $(nproc) CPUs, TORTURE_SCALE=$TORTURE_SCALE" | tee "$log"
status=0
${CARGO:-cargo} test --release --no-fail-fast --test hostile --test limits --test udp_abuse --test netfaults \
  -- --ignored --test-threads 1 --nocapture 2>&1 | tee -a "$log" || status=$?
echo
echo "torture: figures"
grep -E '^\[(uring|epoll)\]|^SKIPPED' "$log" || true
grep -E '^test result:' "$log" || true
exit "$status"
