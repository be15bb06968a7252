#!/bin/busybox sh
# /init of the kernel matrix's virtual machines (`make kernel-test`, scripts/kernel-test.sh).
#
# Runs as PID 1 under the kernel being tested, with busybox, the release `ringecho` and
# `kernel_test_client` (scripts/kernel-test/client.rs), and nothing but loopback (the VM has
# no network card). Each check starts its own servers, asserts what a correct server does on
# this kernel, and reports one line on the second serial port (/dev/ttyS1), which the host
# turns into the kernel x check table:
#
#   KERNEL <uname -r> <uname -v>
#   PROBE <a line of `ringecho probe`>
#   STARTUP <check> <the server's start-up line(s)>
#   RESULT <check> pass|fail|n/a <one line: what was seen>
#   DONE
#
# Everything else (each check's progress, the servers' stderr when a check fails) goes to the
# console, which the host keeps as target/kernel-test/<kernel>.console.log.
#
# Timings mean nothing here (the CPU is emulated, and the host may be busy): waits are long
# and only bound how long a broken server can hang a check; readiness is always a signal (the
# `listening on` line, a client's `stuck` line, a process's exit), never a sleep.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ip link set lo up
exec 3>/dev/ttyS1

T=/tmp
KREL=$(uname -r)
KMAJ=$(echo "$KREL" | cut -d. -f1)
KMIN=$(echo "$KREL" | cut -d. -f2 | sed 's/[^0-9].*//')
# at_least MAJOR MINOR: this kernel is MAJOR.MINOR or newer.
at_least() { [ "$KMAJ" -gt "$1" ] || { [ "$KMAJ" -eq "$1" ] && [ "$KMIN" -ge "$2" ]; }; }

report() { echo "$*" >&3; }
log() { echo "kernel-test: $*"; }

# ---- checks -------------------------------------------------------------------------------
# A check runs in a subshell and ends with `ok DETAIL`, `na DETAIL` or `die REASON`; `check`
# turns that into one RESULT line and kills whatever the check left running.

ok() { echo "pass $*" >"$T/verdict"; exit 0; }
na() { echo "n/a $*" >"$T/verdict"; exit 0; }
die() {
	echo "fail $*" >"$T/verdict"
	for f in "$T"/*.err; do
		[ -s "$f" ] && { log "--- $f"; tail -n 5 "$f"; }
	done
	exit 1
}

# `make kernel-test CHECKS=REGEX` runs only the checks whose names match (kt.only= on the
# kernel command line; a name's spaces are matched by `.`).
ONLY=$(sed -n 's/.*kt\.only=\([^ ]*\).*/\1/p' /proc/cmdline)

check() { # NAME FUNCTION ARGS...
	name=$1
	shift
	[ -z "$ONLY" ] || echo "$name" | grep -Eq -- "$ONLY" || return 0
	log "=== $name"
	rm -f "$T"/verdict "$T"/*.out "$T"/*.err "$T"/pids
	CHECK=$name
	("$@")
	verdict=$(cat "$T/verdict" 2>/dev/null)
	[ -n "$verdict" ] || verdict="fail the check ended without a verdict"
	log "$name: $verdict"
	report "RESULT $name $verdict"
	[ -e "$T/pids" ] && while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$T/pids"
	sysctl -w kernel.io_uring_disabled=0 >/dev/null 2>&1
}

# Process $1 has exited (gone, or a zombie waiting for `wait`).
exited() { [ ! -e "/proc/$1" ] || grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }

# wait_line PATTERN FILE SECS PID: until FILE has a line matching PATTERN (status 0), process
# PID has exited without printing it (2) or SECS have passed (3).
wait_line() {
	n=0
	while ! grep -q "$1" "$2" 2>/dev/null; do
		exited "$4" && { grep -q "$1" "$2" 2>/dev/null && return 0; return 2; }
		n=$((n + 1))
		[ "$n" -ge $(($3 * 20)) ] && return 3
		sleep 0.05
	done
}

# start NAME PROGRAM ARGS...: starts a server (stdout NAME.out, stderr NAME.err) and waits for
# its `listening on` line. Sets SPID, ADDR, SERR.
start() {
	sname=$1
	shift
	SERR=$T/$sname.err
	"$@" >"$T/$sname.out" 2>"$SERR" &
	SPID=$!
	echo "$SPID" >>"$T/pids"
	wait_line '^listening on ' "$T/$sname.out" 120 "$SPID" ||
		die "server never listened ($*): $(head -n 2 "$SERR" | tr '\n' ' ')"
	ADDR=$(sed -n 's/^listening on //p' "$T/$sname.out" | head -n 1)
}

# The start-up line(s) the server printed (everything on stderr before the first stats line).
startup() { grep -v '^stats:' "$SERR" | grep -v '^final:' | tr '\n' ' ' | sed 's/ *$//'; }

# stop [SIGNAL] [SECS]: signals $SPID (TERM) and waits up to SECS (60) for it to exit. Sets RC
# (its exit status), FINAL (its final: line) and ELAPSED (seconds from the signal to the exit).
stop() {
	t0=$(cut -d' ' -f1 /proc/uptime)
	kill "-${1:-TERM}" "$SPID"
	wait_exit "${2:-60}" || die "server still running ${2:-60} s after SIG${1:-TERM}"
	t1=$(cut -d' ' -f1 /proc/uptime)
	ELAPSED=$(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }')
}

# wait_exit [SECS]: waits for $SPID to exit; sets RC and FINAL.
wait_exit() {
	n=0
	until exited "$SPID"; do
		n=$((n + 1))
		[ "$n" -ge $((${1:-60} * 20)) ] && return 1
		sleep 0.05
	done
	wait "$SPID"
	RC=$?
	FINAL=$(grep '^final:' "$SERR" | tail -n 1)
	[ -n "$FINAL" ] || [ "$RC" -ne 0 ] || die "exit 0 without a final: line"
	return 0
}

# field KEY LINE: the value of KEY= in a stats/final line.
field() { echo "$2" | sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

# want KEY OP VALUE: the final line's KEY compares so (OP: -eq -gt -ge -le).
want() {
	v=$(field "$1" "$FINAL")
	[ -n "$v" ] || die "no $1= in the final line: $FINAL"
	test "$v" "$2" "$3" || die "final $1=$v, expected $2 $3 ($FINAL)"
}

# clean_exit CONNS: exit 0 and the counters of a clean run with CONNS connections.
clean_exit() {
	[ "$RC" -eq 0 ] || die "exit status $RC after SIGTERM: $(tail -n 1 "$SERR")"
	[ -z "$1" ] || want accepted -eq "$1"
	want active -eq 0
	want bufs_held -eq 0
	want stale_cqes -eq 0
	want conn_errors -eq 0
	want accept_errors -eq 0
	[ "$(field bytes_in "$FINAL")" = "$(field bytes_out "$FINAL")" ] ||
		die "bytes_in != bytes_out: $FINAL"
}

# json KEY FILE: a number from `ringecho bench --json` output.
json() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$2"; }

# bench [-d SECS] ARGS...: a verified `ringecho bench` against $ADDR for SECS (1); sets MSGS
# (messages echoed).
bench() {
	secs=1
	[ "$1" = -d ] && { secs=$2; shift 2; }
	ringecho bench --addr "$ADDR" --warmup 0 --duration "$secs" --timeout 30 --json "$@" \
		>"$T/bench.out" 2>"$T/bench.err"
	brc=$?
	[ "$brc" -eq 0 ] || die "bench $* exited $brc: $(tail -n 1 "$T/bench.err")"
	MSGS=$(json msgs_received "$T/bench.out")
	[ "${MSGS:-0}" -gt 0 ] || die "bench $*: no messages echoed"
}

# The start-up line this kernel should give a default io_uring server: the fallbacks by
# kernel version (kernel-notes.md).
expected_startup() {
	if at_least 6 1; then mode=defer-taskrun; else mode=coop-taskrun; fi
	# Closed direct descriptors are released at once from 6.13; before, connections get
	# ordinary descriptors.
	if at_least 6 13; then files='[0-9]*(direct)'; else files=ordinary; fi
	recv=multishot
	# With bundles, streams are taken in pieces, and 6.10 > 6.7 has the SIOCINQ command.
	at_least 6 10 && recv=multishot+bundle+cap+inq
	echo "mode=$mode .* files=$files .* recv=$recv batch=off"
}

# ---- the checks ---------------------------------------------------------------------------

probe_check() {
	ringecho probe >"$T/probe.out" 2>"$T/probe.err" || die "probe exited $?: $(cat "$T/probe.err")"
	while IFS= read -r l; do report "PROBE $l"; done <"$T/probe.out"
	ringecho probe --json >"$T/probe.json" || die "probe --json exited $?"
	report "PROBE json $(cat "$T/probe.json")"
	# What probe says against the kernel versions kernel-notes.md gives for each feature.
	for row in "DEFER_TASKRUN:6:1" "COOP_TASKRUN:5:19" "multishot recv:6:0" "send_zc:6:0" \
		"recv bundles:6:10" "capped multishot recv:6:17" "min-wait batching:6:12" "incremental buffer:6:12" \
		"direct descriptors released:6:13" "socket SIOCINQ command:6:7"; do
		feat=${row%%:*}
		ver=${row#*:}
		got=$(grep "^$feat" "$T/probe.out" | awk '{ for (i = 1; i <= NF; i++) if ($i == "yes" || $i == "no") { print $i; exit } }')
		if at_least "${ver%:*}" "${ver#*:}"; then exp=yes; else exp=no; fi
		[ "$got" = "$exp" ] || die "probe says '$feat' supported=$got, expected $exp on $KREL"
	done
	missing=$(awk 'substr($0, 47, 3) == "no " { n = substr($0, 1, 38); sub(/ +$/, "", n); printf "%s%s", sep, n; sep = ", " }' "$T/probe.out")
	ok "as kernel-notes' versions say; lacks: ${missing:-nothing}"
}

# echo_check BACKEND [PREFIX...]: TCP echo (the server started through PREFIX, if any),
# verified, then a clean SIGTERM. An io_uring server must say what this kernel should give it.
echo_check() {
	b=$1
	shift
	start srv "$@" ringecho --backend "$b" --addr 127.0.0.1:0
	line=$(startup)
	report "STARTUP $CHECK $line"
	case $b in
	epoll) echo "$line" | grep -q '^ringecho: epoll' || die "not epoll: $line" ;;
	*)
		echo "$line" | grep -q '^ringecho: io_uring' || die "not io_uring: $line"
		echo "$line" | grep -q "$(expected_startup)" ||
			die "start-up line is not '$(expected_startup)': $line"
		;;
	esac
	bench --conns 20 --size 512 --depth 4
	stop
	clean_exit 20
	want bytes_out -eq $((MSGS * 512))
	ok "$MSGS msgs verified, bytes_out = msgs x 512, clean exit"
}

framed_check() {
	start srv ringecho --backend "$1" --addr 127.0.0.1:0 --protocol framed
	bench --framed --conns 20 --size 300 --depth 4
	stop
	clean_exit 20
	want bytes_out -eq $((MSGS * 304))
	ok "$MSGS frames verified, clean exit"
}

http_check() {
	start srv ringecho --backend "$1" --addr 127.0.0.1:0 --protocol http
	out=$(kernel_test_client http "$ADDR" 8 400) || die "$out"
	stop
	[ "$RC" -eq 0 ] || die "exit status $RC"
	want accepted -eq 8
	want active -eq 0
	want bufs_held -eq 0
	want proto_requested -eq 8
	want proto_malformed -eq 0
	want conn_errors -eq 0
	ok "8 x 400 pipelined requests, every response byte checked, closed on Connection: close"
}

udp_check() {
	start srv ringecho --backend "$1" --addr 127.0.0.1:0 --udp
	report "STARTUP $CHECK $(startup)"
	bench --udp --conns 8 --size 256 --depth 4 --udp-loss-timeout 10
	lost=$(json dgrams_lost "$T/bench.out")
	[ "$lost" = 0 ] || die "$lost datagrams lost on loopback"
	stop
	[ "$RC" -eq 0 ] || die "exit status $RC"
	want bytes_out -eq $((MSGS * 256))
	want dgram_truncated -eq 0
	want dgram_dropped -eq 0
	ok "$MSGS datagrams verified, none lost"
}

# flag_check FLAGS EXPECT [BENCH ARGS]: a uring server with FLAGS says EXPECT (a grep pattern)
# in its start-up line and echoes verified.
flag_check() {
	flags=$1
	expect=$2
	shift 2
	# shellcheck disable=SC2086 # FLAGS are several words
	start srv ringecho --backend uring --addr 127.0.0.1:0 $flags
	line=$(startup)
	report "STARTUP $CHECK $line"
	echo "$line" | grep -q -- "$expect" || die "start-up line lacks '$expect': $line"
	if [ $# -gt 0 ]; then bench "$@"; else bench --conns 10 --size 512 --depth 4; fi
	stop
	clean_exit
	ok "'$expect'; $MSGS msgs verified"
}

# --buf-count 8: receives find the buffer ring empty (-ENOBUFS) and wait for buffers.
enobufs_check() {
	start srv ringecho --backend uring --addr 127.0.0.1:0 --threads 1 --buf-count 8
	report "STARTUP $CHECK $(startup)"
	bench -d 2 --conns 6 --size 65536 --depth 4
	stop
	clean_exit 6
	want bytes_out -eq $((MSGS * 65536))
	want enobufs -gt 0
	ok "enobufs=$(field enobufs "$FINAL") recv_rearms=$(field recv_rearms "$FINAL"), $MSGS x 64 KiB verified"
}

# 100 clients that send and never read, beside 20 verified ones, with a 64-buffer ring: the
# stuck ones hold at most half the ring, the server idles while they are stuck, the others
# are served, and SIGTERM drains for --drain-timeout and exits 0.
hogs_check() {
	start srv ringecho --backend uring --addr 127.0.0.1:0 --threads 1 --buf-count 64 \
		--drain-timeout 1 --stats-interval 1
	kernel_test_client hogs "$ADDR" 100 >"$T/hogs.out" 2>&1 &
	hpid=$!
	echo "$hpid" >>"$T/pids"
	wait_line '^stuck' "$T/hogs.out" 180 "$hpid" || die "hogs: $(cat "$T/hogs.out")"
	# The server has paused every one of them (a stats line says so), then has nothing to do:
	# the next stats line, a second later, shows (almost) no enters.
	n=0
	until [ "$(field paused "$(grep '^stats:' "$SERR" | tail -n 1)")" -ge 100 ] 2>/dev/null; do
		n=$((n + 1))
		[ "$n" -lt 1200 ] || die "the server never paused all 100: $(grep '^stats:' "$SERR" | tail -n 1)"
		exited "$SPID" && die "server exited while the clients were stuck"
		sleep 0.05
	done
	n0=$(grep -c '^stats:' "$SERR")
	until [ "$(grep -c '^stats:' "$SERR")" -gt "$n0" ]; do
		exited "$SPID" && die "server exited while the clients were stuck"
		sleep 0.05
	done
	s1=$(grep '^stats:' "$SERR" | sed -n "${n0}p")
	s2=$(grep '^stats:' "$SERR" | sed -n "$((n0 + 1))p")
	idle_enters=$(($(field enters "$s2") - $(field enters "$s1")))
	held=$(field bufs_held "$s2")
	paused=$(field paused "$s2")
	[ "$idle_enters" -le 20 ] || die "$idle_enters enters in a second with every client stuck: $s1 -> $s2"
	[ "$held" -le 32 ] || die "stuck clients hold $held of 64 buffers (budget 32): $s2"
	bench -d 2 --conns 20 --size 4096 --depth 2
	stop TERM 60
	kill -KILL "$hpid"
	[ "$RC" -eq 0 ] || die "exit status $RC after SIGTERM"
	want active -eq 0
	want bufs_held -eq 0
	want accepted -eq 120
	want copied_bytes -gt 0
	ok "100 stuck (paused=$paused, $held of 64 bufs held, $idle_enters enters/s idle), 20 others: $MSGS msgs verified; drained in ${ELAPSED}s"
}

tiny_cq_check() {
	start srv ringecho --backend uring --addr 127.0.0.1:0 --threads 1 --sq-entries 16 \
		--cq-entries 16
	line=$(startup)
	report "STARTUP $CHECK $line"
	echo "$line" | grep -q 'sq=16 cq=16' || die "not a 16-entry CQ: $line"
	bench -d 2 --conns 100 --size 2048 --depth 4
	stop
	clean_exit 100
	want bytes_out -eq $((MSGS * 2048))
	want cq_dropped -eq 0
	ok "cq_overflows=$(field cq_overflows "$FINAL") recv_rearms=$(field recv_rearms "$FINAL") accept_rearms=$(field accept_rearms "$FINAL"), $MSGS msgs verified"
}

# One shard: with two, whether the owed and the idle client share one depends on the port.
drain_check() {
	start srv ringecho --backend "$1" --addr 127.0.0.1:0 --threads 1 --drain-timeout 60
	out=$(kernel_test_client drain "$ADDR" "$SPID") || die "$out"
	wait_exit 90 || die "server still running 90 s after SIGTERM"
	[ "$RC" -eq 0 ] || die "exit status $RC"
	back=$(echo "$out" | sed -n 's/.* back=\([0-9]*\).*/\1/p')
	want accepted -eq 2
	want active -eq 0
	want bufs_held -eq 0
	want bytes_out -eq $((back + 1))
	[ "$(field bytes_in "$FINAL")" = "$(field bytes_out "$FINAL")" ] || die "bytes_in != bytes_out: $FINAL"
	ok "$out"
}

# Connections the server closes while another one sits idle must really close: the peer gets
# FIN and the server holds no socket for them.
closes_check() {
	start srv ringecho --backend "$1" --addr 127.0.0.1:0 --threads 1
	out=$(kernel_test_client closes "$ADDR" 20) || die "$out"
	stop
	[ "$RC" -eq 0 ] || die "exit status $RC"
	want accepted -eq 21
	want closed -eq 21
	ok "$out"
}

# off_auto HOW PATTERN: the default server where io_uring is off (HOW: a `kernel_test_client
# run` prefix, or nothing after a sysctl) falls back to epoll with one line matching PATTERN,
# and serves.
off_auto() {
	pattern=$1
	shift
	start srv "$@" ringecho --addr 127.0.0.1:0
	line=$(startup)
	report "STARTUP $CHECK $line"
	[ "$(grep -c 'falling back to epoll' "$SERR")" -eq 1 ] || die "no single fallback line: $line"
	grep 'falling back to epoll' "$SERR" | grep -q -- "$pattern" || die "fallback line lacks '$pattern': $line"
	grep -q '^ringecho: epoll' "$SERR" || die "not serving on epoll: $line"
	bench --backend epoll --conns 10 --size 512 --depth 4
	stop
	clean_exit 10
	ok "$(grep 'falling back' "$SERR" | cut -c1-110)..."
}

# off_uring PATTERN PREFIX...: `--backend uring` where io_uring is off exits 2 with one line.
off_uring() {
	pattern=$1
	shift
	timeout 60 "$@" ringecho --backend uring --addr 127.0.0.1:0 >"$T/u.out" 2>"$T/u.err"
	rc=$?
	report "STARTUP $CHECK $(cat "$T/u.err")"
	[ "$rc" -eq 2 ] || die "exit status $rc, expected 2: $(cat "$T/u.err")"
	[ "$(wc -l <"$T/u.err")" -eq 1 ] || die "not one line: $(cat "$T/u.err")"
	grep -q -- "$pattern" "$T/u.err" || die "line lacks '$pattern': $(cat "$T/u.err")"
	[ ! -s "$T/u.out" ] || die "printed on stdout: $(cat "$T/u.out")"
	ok "exit 2: $(cut -c1-100 "$T/u.err")..."
}

sysctl_check() { # VALUE then off_auto/off_uring args
	[ -e /proc/sys/kernel/io_uring_disabled ] || na "no kernel.io_uring_disabled (added in 6.6)"
	sysctl -w "kernel.io_uring_disabled=$1" >/dev/null || die "cannot set io_uring_disabled=$1"
	shift
	"$@"
}

# With io_uring off by sysctl, what `ringecho probe` and a default `ringecho bench` say.
sysctl_tools_check() {
	[ -e /proc/sys/kernel/io_uring_disabled ] || na "no kernel.io_uring_disabled (added in 6.6)"
	sysctl -w kernel.io_uring_disabled=2 >/dev/null || die "cannot set io_uring_disabled=2"
	ringecho probe >"$T/p.out" 2>"$T/p.err"
	prc=$?
	report "STARTUP $CHECK probe exit $prc: $(tr '\n' ' ' <"$T/p.err")"
	[ "$prc" -eq 2 ] || die "probe exited $prc, expected 2"
	grep -q 'io_uring_disabled  2' "$T/p.out" || die "probe does not show io_uring_disabled 2"
	start srv ringecho --backend epoll --addr 127.0.0.1:0
	ringecho bench --addr "$ADDR" --duration 1 --warmup 0 >"$T/b.out" 2>"$T/b.err"
	brc=$?
	report "STARTUP $CHECK bench exit $brc: $(tr '\n' ' ' <"$T/b.err")"
	[ "$brc" -eq 2 ] || die "bench with its io_uring client exited $brc, expected 2: $(cat "$T/b.err")"
	[ "$(wc -l <"$T/b.err")" -eq 1 ] || die "bench: not one line: $(cat "$T/b.err")"
	stop
	ok "probe and bench (io_uring client) exit 2 with one line each"
}

# ---- run ----------------------------------------------------------------------------------

report "KERNEL $KREL $(uname -v)"
log "kernel $KREL, $(nproc) CPUs"

check probe probe_check
for b in auto uring epoll; do
	check "echo/$b" echo_check "$b"
	check "framed/$b" framed_check "$b"
	check "http/$b" http_check "$b"
	check "udp/$b" udp_check "$b"
done
check "uid 1000/auto" echo_check auto kernel_test_client run --uid 1000 --

check "no-multishot-recv" flag_check --no-multishot-recv 'recv=single-shot'
if at_least 6 12; then inc='recv=multishot+bundle+incremental'; else inc='recv=multishot batch='; fi
check "buf-incremental" flag_check --buf-incremental "$inc" --conns 4 --size 65536 --depth 2
check "no-recv-bundle" flag_check --no-recv-bundle 'recv=multishot batch='
if at_least 6 10; then bundle='recv=multishot+bundle'; else bundle='recv=multishot batch='; fi
check "recv-bundle (default)" flag_check "" "$bundle" --conns 4 --size 65536 --depth 2
check "ring-mode coop" flag_check "--ring-mode coop-taskrun" 'mode=coop-taskrun'
check "ring-mode plain" flag_check "--ring-mode plain" 'mode=plain'
check "sqpoll" flag_check --sqpoll 'mode=sqpoll'
check "zc-threshold" flag_check "--zc-threshold 1024" 'zc=>=1024B' --conns 10 --size 4096 --depth 2
check "register-ring-fd" flag_check --register-ring-fd 'ring_fd=registered'
if at_least 6 12; then batch='batch=32/50us(min-wait)'; else batch='batch=32/50us(timeout)'; fi
check "batch-wait-us 50" flag_check "--batch-wait-us 50" "$batch"
check "threads 1" flag_check "--threads 1" 'shards=1'

check "buf-count 8" enobufs_check
check "never-readers" hogs_check
check "tiny CQ" tiny_cq_check
check "close beside idle/uring" closes_check uring
check "close beside idle/epoll" closes_check epoll
check "drain/uring" drain_check uring
check "drain/epoll" drain_check epoll

check "seccomp EPERM/auto" off_auto 'seccomp' kernel_test_client run --deny-uring EPERM --
check "seccomp EPERM/uring" off_uring 'EPERM' kernel_test_client run --deny-uring EPERM --
check "seccomp ENOSYS/auto" off_auto 'ENOSYS' kernel_test_client run --deny-uring ENOSYS --
check "disabled=2/auto" sysctl_check 2 off_auto 'io_uring_disabled is 2'
check "disabled=2/uring" sysctl_check 2 off_uring 'io_uring_disabled is 2'
check "disabled=2/probe+bench" sysctl_tools_check
check "disabled=1/root" sysctl_check 1 echo_check uring
check "disabled=1/uid 1000" sysctl_check 1 off_auto 'io_uring_disabled is 1' kernel_test_client run --uid 1000 --

report "DONE"
log "done"
sync
poweroff -f
