#!/usr/bin/env bash
# report.sh DIR SERIES...: the kernel x check table (Markdown) from DIR/SERIES.results, the
# lines each VM's init.sh wrote to its second serial port (see init.sh). Exits 1 if a check
# failed or is missing on any kernel, or a VM did not finish; a failure listed in
# scripts/kernel-test/known-failures (a known bug, with its reason) shows as `FAIL (known)` and
# does not count, but a listed check that passes does (so the list cannot go stale).
set -euo pipefail
dir=$1
shift
known=$(dirname "$0")/known-failures

# Each kernel's results file, with carriage returns (serial line endings) gone.
files=()
for s in "$@"; do
  f=$dir/$s.results
  [ -e "$f" ] || : >"$f"
  tr -d '\r' <"$f" >"$f.txt"
  files+=("$f.txt")
done

awk -v series="$*" -v known="$known" '
  BEGIN {
    n = split(series, S, " ")
    for (i = 1; i < ARGC; i++) idx[ARGV[i]] = i
    # known-failures: "SERIES | CHECK | why" lines.
    while ((getline l < known) > 0) {
      if (l ~ /^[ \t]*(#|$)/) continue
      split(l, f, /[ \t]*\|[ \t]*/)
      sub(/^[ \t]+/, "", f[1])
      kf[f[1], f[2]] = f[3]
    }
  }
  FNR == 1 { k = idx[FILENAME] }
  { line[k, FNR] = $0; lines[k] = FNR }
  /^KERNEL / {
    rel[k] = $2
    # Debian names its kernels by ABI (6.1.0-57): the upstream version is in `uname -v`.
    if (match($0, /Debian [0-9][^ ]*/)) up[k] = substr($0, RSTART + 7, RLENGTH - 7)
  }
  /^RESULT / {
    # RESULT <check, may contain spaces> <pass|fail|n/a> <detail>
    rest = substr($0, 8)
    if (match(rest, / (pass|fail|n\/a)( |$)/)) {
      name = substr(rest, 1, RSTART - 1)
      verdict = substr(rest, RSTART + 1, RLENGTH - 1); sub(/ $/, "", verdict)
      detail = substr(rest, RSTART + RLENGTH)
      if (!(name in seen)) { seen[name] = 1; order[++nc] = name }
      res[k, name] = verdict; det[k, name] = detail
    }
  }
  /^DONE/ { done[k] = 1 }
  /^QEMU / { qrc[k] = $2; secs[k] = $3 }
  END {
    bad = 0
    printf "# Kernel matrix (`make kernel-test`)\n\n| check |"
    for (i = 1; i <= n; i++) {
      h = S[i]
      if (rel[i] != "") h = h " (" (up[i] != "" ? up[i] : rel[i]) ")"
      printf " %s |", h
    }
    printf "\n|---|"
    for (i = 1; i <= n; i++) printf "---|"
    printf "\n| boot and finish |"
    for (i = 1; i <= n; i++) {
      if (done[i]) c = "pass"
      else { c = "FAIL"; bad = 1 }
      printf " %s |", c
    }
    printf "\n"
    for (j = 1; j <= nc; j++) {
      name = order[j]
      printf "| %s |", name
      for (i = 1; i <= n; i++) {
        v = res[i, name]
        isknown = ((S[i], name) in kf)
        if (v == "") { v = "missing"; bad = 1 }
        else if (v == "fail" && isknown) { v = "FAIL (known)"; nknown++ }
        else if (v == "fail") { v = "FAIL"; bad = 1 }
        else if (isknown) { v = v " (listed as known failure)"; bad = 1 }
        printf " %s |", v
      }
      printf "\n"
    }
    printf "\n"
    for (i = 1; i <= n; i++) {
      why = ""
      if (rel[i] == "") why = "never reached /init"
      else if (!done[i]) why = "stopped before the last check"
      if (qrc[i] == 124) why = why ", timed out after " secs[i] " s"
      else if (qrc[i] != "" && qrc[i] != 0) why = why ", qemu exited " qrc[i]
      if (why != "") printf "- **%s**: the VM %s (see %s.console.log)\n", S[i], why, S[i]
      for (j = 1; j <= nc; j++) {
        c = order[j]
        if (res[i, c] == "fail" && ((S[i], c) in kf))
          printf "- **%s %s** (known: %s): %s\n", S[i], c, kf[S[i], c], det[i, c]
        else if (res[i, c] == "fail") printf "- **%s %s**: %s\n", S[i], c, det[i, c]
        else if (res[i, c] != "" && ((S[i], c) in kf))
          printf "- **%s %s** passed but is listed in scripts/kernel-test/known-failures: remove it there\n", S[i], c
      }
    }
    if (nknown) printf "\n%d known failure(s), listed in scripts/kernel-test/known-failures with the reason.\n", nknown
    printf "\n## Details\n"
    for (i = 1; i <= n; i++) {
      printf "\n### %s: %s, VM %s s\n\n", S[i], (rel[i] != "" ? rel[i] " (" up[i] ")" : "did not boot"), secs[i]
      for (j = 1; j <= nc; j++)
        if (res[i, order[j]] != "") printf "- %s: %s %s\n", order[j], res[i, order[j]], det[i, order[j]]
      printf "\nStart-up lines and tool output:\n\n```\n"
      for (l = 1; l <= lines[i]; l++) if (line[i, l] ~ /^STARTUP /) print substr(line[i, l], 9)
      printf "```\n\n`ringecho probe`:\n\n```\n"
      for (l = 1; l <= lines[i]; l++) if (line[i, l] ~ /^PROBE / && line[i, l] !~ /^PROBE json/) print substr(line[i, l], 7)
      printf "```\n"
    }
    exit bad
  }
' "${files[@]}"
