#!/usr/bin/env bash
# `make kernel-test [KERNELS="6.1 6.12"]`: the kernel matrix (issue 17). Boots each kernel
# series named in KERNELS (Debian's newest linux-image-SERIES*-cloud-amd64 package) under
# QEMU's emulation (TCG: no KVM needed) with an initramfs of busybox, the release `ringecho`
# and `kernel_test_client`, runs scripts/kernel-test/init.sh inside (probe, every protocol on
# every backend, the fallback flags, the pressure cases, io_uring switched off), and prints a
# kernel x check table.
#
# Needs: root and apt-get for what is missing (qemu-system-x86 is installed; the kernel and
# busybox-static packages are only downloaded and unpacked under target/kernel-test/, nothing
# is installed into this machine's boot set-up). The VMs have no network card: every check
# runs over the VM's own loopback.
#
# Exit status: 0 every check passed on every kernel; 1 a check failed (or a VM did not finish);
# 2 the matrix could not run (a package could not be fetched, QEMU missing, a build failed):
# the last line says why.
#
# Variables: KERNELS (default "6.1 6.12"), CHECKS (a regular expression: run only the checks
# whose names match, e.g. 'drain|tiny.CQ'), VM_TIMEOUT (seconds per kernel, default 1200),
# CARGO.
set -euo pipefail
cd "$(dirname "$0")/.."

KERNELS=${KERNELS:-6.1 6.12}
CHECKS=${CHECKS:-}
VM_TIMEOUT=${VM_TIMEOUT:-1200}
CARGO=${CARGO:-cargo}
OUT=target/kernel-test
mkdir -p "$OUT/debs"
APT_LOG=$OUT/apt.log
: >"$APT_LOG"
t_start=$(date +%s)

say() { echo "kernel-test: $*" >&2; }
cannot() {
  say "cannot run: $*"
  exit 2
}
[[ $CHECKS != *[[:space:]]* ]] || cannot "CHECKS: no spaces (match a space in a check's name with .)"

# ---- tools and packages -------------------------------------------------------------------
apt_updated=
apt_update() {
  [ -z "$apt_updated" ] || return 0
  apt_updated=1
  say "apt-get update"
  apt-get update -q -o Acquire::Retries=3 >>"$APT_LOG" 2>&1 ||
    say "apt-get update failed (see $APT_LOG); trying with the lists this machine has"
}

# apt's last error line, if any, and where the rest is.
apt_error() {
  local e
  e=$(grep '^E: ' "$APT_LOG" | tail -n 1 || true)
  echo "${e:+$e }(apt's output: $APT_LOG)"
}

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    cannot "qemu-system-x86_64 is missing and this is not root with apt-get (install qemu-system-x86)"
  fi
  say "installing qemu-system-x86"
  apt_update
  apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 qemu-system-x86 \
    >>"$APT_LOG" 2>&1 || cannot "apt-get install qemu-system-x86 failed: $(apt_error)"
fi

# newest PATTERN: the newest package whose name matches the extended regex PATTERN and that
# apt has a candidate version of, or nothing.
newest() {
  local p
  for p in $(apt-cache pkgnames | grep -E "$1" | sort -V -r); do
    if [[ $(apt-cache policy "$p" 2>/dev/null) == *"Candidate: "[0-9]* ]]; then
      echo "$p"
      return 0
    fi
  done
}

# get_deb PATTERN WHAT: sets PKG to the newest package matching PATTERN and DEB to its .deb
# under $OUT/debs, downloading it unless it is there from an earlier run. Package versions
# move on (Debian's kernel ABI number changes with each point release), so when apt's lists
# have no such package, or name one the mirror no longer has, it runs `apt-get update` and
# tries once more; then gives up with one line saying why.
get_deb() {
  local try debs
  for try in 1 2; do
    [ "$try" = 1 ] || apt_update
    PKG=$(newest "$1")
    [ -n "$PKG" ] || continue
    debs=("$OUT/debs/$PKG"_*.deb)
    if [ ! -e "${debs[0]}" ]; then
      say "downloading $PKG"
      (cd "$OUT/debs" && apt-get download -q -o Acquire::Retries=3 "$PKG") >>"$APT_LOG" 2>&1 ||
        continue
      debs=("$OUT/debs/$PKG"_*.deb)
    fi
    DEB=${debs[0]}
    return 0
  done
  if [ -z "$PKG" ]; then
    cannot "no $2 package in apt's lists, even after apt-get update: $(apt_error)"
  fi
  cannot "apt-get download $PKG failed (network or mirror trouble?): $(apt_error)"
}

command -v apt-cache >/dev/null 2>&1 || cannot "apt-cache not found: the kernels come from Debian's packages"
get_deb '^busybox-static$' busybox-static
rm -rf "$OUT/busybox" && mkdir -p "$OUT/busybox"
dpkg-deb -x "$DEB" "$OUT/busybox"
BUSYBOX=$OUT/busybox/bin/busybox
[ -x "$BUSYBOX" ] || cannot "$DEB has no bin/busybox"

declare -a SERIES PKGS VMLINUZ
for s in $KERNELS; do
  [[ $s =~ ^[0-9]+\.[0-9]+$ ]] || cannot "KERNELS: '$s' is not a series such as 6.1 or 6.12"
  # 6.1 is linux-image-6.1.0-57-cloud-amd64, 6.12 linux-image-6.12.118+deb12-cloud-amd64.
  get_deb "^linux-image-${s//./\\.}[.-][0-9][0-9a-z.+~-]*-cloud-amd64$" "Linux $s cloud-amd64"
  dir=$OUT/kernels/$PKG
  if [ ! -d "$dir/boot" ]; then
    mkdir -p "$dir"
    dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$dir" --wildcards './boot/vmlinuz-*' ||
      cannot "$DEB: no boot/vmlinuz-* in it"
  fi
  SERIES+=("$s")
  PKGS+=("$PKG")
  images=("$dir"/boot/vmlinuz-*)
  VMLINUZ+=("${images[0]}")
done

# ---- the initramfs ------------------------------------------------------------------------
say "building ringecho and kernel_test_client (release)"
"$CARGO" build --release --quiet --bin ringecho --example kernel_test_client ||
  cannot "cargo build --release failed"

root=$OUT/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp "$BUSYBOX" "$root/bin/busybox"
for bin in target/release/ringecho target/release/examples/kernel_test_client; do
  # Debug info is most of their size, and the emulated kernel unpacks every byte at boot.
  strip -o "$root/bin/$(basename "$bin")" "$bin" 2>/dev/null || cp "$bin" "$root/bin/"
  # The shared libraries they load, at the paths ldd names.
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
install -m 755 scripts/kernel-test/init.sh "$root/init"
(cd "$root" && find . | "$OLDPWD/$BUSYBOX" cpio -o -H newc 2>/dev/null) >"$OUT/initramfs.cpio"

# ---- boot each kernel ---------------------------------------------------------------------
for i in "${!SERIES[@]}"; do
  s=${SERIES[$i]}
  console=$OUT/$s.console.log
  results=$OUT/$s.results
  # A kernel that panics before /init runs (an emulation flake, seen once in early boot:
  # sched_clock_cpu in an interrupt) is booted once more; the second verdict stands.
  for attempt in 1 2; do
    rm -f "$console" "$results"
    say "booting ${PKGS[$i]} (TCG, up to $VM_TIMEOUT s); console: $console"
    t0=$(date +%s)
    timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nic none \
      -kernel "${VMLINUZ[$i]}" -initrd "$OUT/initramfs.cpio" \
      -append "console=ttyS0 quiet panic=-1${CHECKS:+ kt.only=$CHECKS}" -display none -monitor none -no-reboot \
      -serial "file:$console" -serial "file:$results" &
    qpid=$!
    # Progress: each check's verdict as the VM reports it.
    until [ -e "$console" ] || ! kill -0 "$qpid" 2>/dev/null; do sleep 0.2; done
    tail -n +1 --pid="$qpid" -f "$console" 2>/dev/null |
      sed -u -n "s/^kernel-test: \(.*: \(pass\|fail\|n\/a\) .*\)/  [$s] \1/p" | cut -c1-150 >&2 &
    rc=0
    wait "$qpid" || rc=$?
    wait || true
    case $rc in
    0) say "$s: VM finished in $(($(date +%s) - t0)) s" ;;
    124) say "$s: VM timed out after $VM_TIMEOUT s" ;;
    *) say "$s: qemu exited $rc" ;;
    esac
    if [ "$attempt" = 1 ] && ! grep -q '^KERNEL ' "$results" 2>/dev/null &&
      grep -q 'Kernel panic' "$console" 2>/dev/null; then
      say "$s: the kernel panicked before /init ran ($console); booting it once more"
      continue
    fi
    echo "QEMU $rc $(($(date +%s) - t0))" >>"$results"
    break
  done
done

# ---- the table ----------------------------------------------------------------------------
report=$OUT/report.md
status=0
scripts/kernel-test/report.sh "$OUT" "${SERIES[@]}" >"$report" || status=$?
# The table and the failures; the start-up lines and probe output are in the report file.
sed '/^## Details/,$d' "$report"
say "report: $report; consoles: $OUT/*.console.log; wall time $(($(date +%s) - t_start)) s"
exit "$status"
