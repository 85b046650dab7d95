#!/usr/bin/env bash
# Write speed of a fresh dynamic image, side by side with the peers, on the
# same workload (qemu-img bench's):
#   ours:      vhdx bench -w -s 4k -S 40k -c 200000 --pattern=0xcd IMAGE.vhdx
#   qemu-vhdx: qemu-img bench -f vhdx <same options> IMAGE.vhdx
#   raw:       qemu-img bench -f raw <same options> IMAGE.raw
# Each run gets a fresh 8 GiB image: `vhdx create` for ours, `qemu-img
# create -f vhdx` for QEMU's (each tool's default block size), a fresh sparse
# file (truncate) for raw. The three alternate, rotating which goes first;
# medians and the ratios vhdx/raw and qemu-vhdx/raw are printed. The default
# pattern (0xcd, not qemu-img's 0) matters: libvhdx allocates nothing for
# all-zero data written to an unallocated block, so a zero pattern would
# measure a workload that writes nothing (the script shows that case too).
#
# Then, fsyncs per allocated block: ours from `vhdx bench --stats` (and
# checked against strace), QEMU's counted with strace, with
# --flush-interval 0 (none), 64 and 1 (-d 1; fewer requests, see FSYNC_COUNT).
# And the creation of a 20 GiB fixed image: `vhdx create --type fixed`
# against `fallocate -l 20G` and `qemu-img create -f vhdx -o subformat=fixed`,
# with the bytes each one writes (strace) and the space it allocates.
#
#   bench/write_vs_qemu.sh [WORKDIR]   scratch files go to a fresh folder
#                                      inside WORKDIR (default /var/tmp),
#                                      removed at exit; needs 21 GiB free
# Environment: VHDX (our binary, default build/bin/vhdx), REPS (runs per tool,
# default 5), COUNT (requests, default 200000), PATTERN (default 0xcd),
# DIRECT=1 also runs every tool with -t none (O_DIRECT), FSYNC_COUNT
# (requests of the --flush-interval 1 runs, default 20000), FIXED_SIZE
# (default 20G), SKIP_WRITES=1, SKIP_FSYNC=1, SKIP_FIXED=1 skip a part.
set -euo pipefail

VHDX=$(realpath -m "${VHDX:-$(dirname "$0")/../build/bin/vhdx}")
base=$(realpath -m "${1:-${TMPDIR:-/var/tmp}}")
REPS=${REPS:-5}
COUNT=${COUNT:-200000}
PATTERN=${PATTERN:-0xcd}
DIRECT=${DIRECT:-0}
FSYNC_COUNT=${FSYNC_COUNT:-20000}
FIXED_SIZE=${FIXED_SIZE:-20G}
SIZE=8G
WORKLOAD=(-w -s 4k -S 40k -c "$COUNT")

bench_name=write_vs_qemu
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_vhdx "has no bench subcommand" bench --help
require_tools qemu-img fallocate truncate
have_strace=0
command -v strace >/dev/null && have_strace=1

make_scratch "$base" vhdx-write-bench

# A fresh image for one tool: ours | qemu | raw (the other tools' images
# stay, so that the last run of each can be compared).
fresh_image() {
  case $1 in
    ours) rm -f "$work/ours.vhdx" ;;
    qemu) rm -f "$work/qemu.vhdx" ;;
    raw) rm -f "$work/img.raw" ;;
  esac
  case $1 in
    ours) "$VHDX" create "$work/ours.vhdx" "$SIZE" >/dev/null ;;
    qemu) qemu-img create -q -f vhdx "$work/qemu.vhdx" "$SIZE" ;;
    raw) truncate -s "$SIZE" "$work/img.raw" ;;
  esac
}

# Sets cmd to the bench command line of one tool, with extra options "$@".
bench_cmd() {
  local tool=$1
  shift
  case $tool in
    ours) cmd=("$VHDX" bench "$@" "$work/ours.vhdx") ;;
    qemu) cmd=(qemu-img bench -f vhdx "$@" "$work/qemu.vhdx") ;;
    raw) cmd=(qemu-img bench -f raw "$@" "$work/img.raw") ;;
  esac
}

# One timed run of TOOL on a fresh image, after flushing earlier runs' dirty
# pages (so that no run pays for another's writeback). Prints "BENCH WALL":
# the "Run completed in" seconds and the wall-clock seconds of the whole
# command (open and close included: ours applies its log and flushes there).
run_once() {
  local tool=$1 t0 t1 out cmd
  shift
  bench_cmd "$tool" "$@"
  fresh_image "$tool"
  sync
  t0=$(date +%s.%N)
  out=$("${cmd[@]}" 2>&1) || die "failed: ${cmd[*]}: $out"
  t1=$(date +%s.%N)
  echo "$out" | awk -v t0="$t0" -v t1="$t1" \
    '/^Run completed in/ {printf "%s %.3f\n", $4, t1 - t0; found = 1} END {exit !found}' ||
    die "no 'Run completed' line from $tool: $out"
}

table=()
# compare_three LABEL OPTIONS...: REPS rotating rounds of ours, qemu, raw.
compare_three() {
  local label=$1 i tool
  shift
  local -A runs=([ours]="" [qemu]="" [raw]="")
  local order=(ours qemu raw)
  for ((i = 0; i < REPS; i++)); do
    for tool in "${order[@]:i%3}" "${order[@]:0:i%3}"; do
      runs[$tool]+="$(run_once "$tool" "$@")"$'\n'
    done
  done
  local -A bench wall
  for tool in ours qemu raw; do
    echo "  $tool runs (bench s, wall s): $(printf '%s' "${runs[$tool]}" | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
    bench[$tool]=$(printf '%s' "${runs[$tool]}" | median 1)
    wall[$tool]=$(printf '%s' "${runs[$tool]}" | median 2)
  done
  table+=("$(printf '%-30s %9s %9s %9s %11s %11s' "$label" "${bench[ours]}" "${bench[qemu]}" "${bench[raw]}" \
    "$(ratio "${bench[ours]}" "${bench[raw]}" 2)" "$(ratio "${bench[qemu]}" "${bench[raw]}" 2)")")
  table+=("$(printf '%-30s %9s %9s %9s %11s %11s' "  (wall, open+close included)" "${wall[ours]}" \
    "${wall[qemu]}" "${wall[raw]}" "$(ratio "${wall[ours]}" "${wall[raw]}" 2)" \
    "$(ratio "${wall[qemu]}" "${wall[raw]}" 2)")")
}

versions_line
echo "$REPS runs per tool, rotating; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg);" \
  "file system: $(df -T "$work" | awk 'NR == 2 {print $2}')"
fresh_image ours
fresh_image qemu
echo "block size: vhdx $("$VHDX" info "$work/ours.vhdx" | sed -n 's/^block size: //p'), qemu-img" \
  "$("$VHDX" info "$work/qemu.vhdx" | sed -n 's/^block size: //p')"

if [ "${SKIP_WRITES:-0}" != 1 ]; then
  echo "== writes: ${WORKLOAD[*]} --pattern=$PATTERN, fresh $SIZE image per run"
  compare_three "writeback, pattern $PATTERN" "${WORKLOAD[@]}" --pattern="$PATTERN"
  # The last run of each tool left its image: all three must hold the same
  # virtual disk, and ours must pass its own check.
  "$VHDX" check "$work/ours.vhdx" >/dev/null || die "vhdx check failed on our image"
  qemu-img compare -q -f vhdx -F raw "$work/ours.vhdx" "$work/img.raw" || die "our image differs from raw"
  qemu-img compare -q -f vhdx -F raw "$work/qemu.vhdx" "$work/img.raw" || die "QEMU's image differs from raw"
  echo "  the three images hold the same disk (qemu-img compare); ours passes vhdx check"
  compare_three "writeback, pattern 0 (default)" "${WORKLOAD[@]}"
  if [ "$DIRECT" = 1 ]; then
    compare_three "-t none, pattern $PATTERN" "${WORKLOAD[@]}" --pattern="$PATTERN" -t none
  fi
  rm -f "$work/ours.vhdx" "$work/qemu.vhdx" "$work/img.raw"
fi

fsync_rows=()
if [ "${SKIP_FSYNC:-0}" != 1 ]; then
  echo "== fsyncs per allocated block"
  [ "$have_strace" = 1 ] || echo "  strace is not installed: QEMU's fsyncs cannot be counted (ours come from --stats)"
  # fsyncs of one traced command: fsync + fdatasync calls (strace -c).
  count_fsyncs() {  # the calls column of strace -c: % time, seconds, usecs/call, calls
    strace -f -c -e trace=fsync,fdatasync -o "$work/strace.txt" "$@" >"$work/out.txt" 2>&1 ||
      die "failed: $*: $(cat "$work/out.txt")"
    awk '$NF == "fsync" || $NF == "fdatasync" {n += $4} END {print n + 0}' "$work/strace.txt"
  }
  allocated_blocks() {
    "$VHDX" info "$1" | awk '/^blocks:/ {for (i = 2; i < NF; i++) if ($(i + 1) ~ /^fully-present/) print $i + 0}'
  }
  for fi in 0 64 1; do
    opts=(-w -s 4k -S 40k --pattern="$PATTERN")
    if [ "$fi" = 1 ]; then opts+=(-c "$FSYNC_COUNT" -d 1 --flush-interval=1)
    elif [ "$fi" != 0 ]; then opts+=(-c "$COUNT" --flush-interval="$fi")
    else opts+=(-c "$COUNT"); fi
    bench_cmd ours "${opts[@]}" --stats
    fresh_image ours
    stats=$("${cmd[@]}" | sed -n 's/^Write stats: //p')
    ours_fsyncs=$(echo "$stats" | awk '{print $1}')
    ours_blocks=$(echo "$stats" | sed -n 's/.* \([0-9]*\) blocks allocated.*/\1/p')
    ours_traced=-
    qemu_fsyncs=- qemu_blocks=-
    if [ "$have_strace" = 1 ]; then
      bench_cmd ours "${opts[@]}"
      fresh_image ours
      ours_traced=$(count_fsyncs "${cmd[@]}")
      bench_cmd qemu "${opts[@]}"
      fresh_image qemu
      qemu_fsyncs=$(count_fsyncs "${cmd[@]}")
      qemu_blocks=$(allocated_blocks "$work/qemu.vhdx")
    fi
    label="flush-interval $fi"
    [ "$fi" = 0 ] && label="no flush-interval"
    [ "$fi" = 1 ] && label="flush-interval 1 (-d 1)"
    n=$COUNT depth=64
    [ "$fi" = 1 ] && n=$FSYNC_COUNT depth=1
    # The flushes the workload asks for: one each time the requests not yet
    # sent are a multiple of the interval, from the first batch on.
    flushes=$(awk -v n="$n" -v d="$depth" -v f="$fi" 'BEGIN {if (d > n) d = n; print f ? int((n - d) / f) + 1 : 0}')
    fsync_rows+=("$(printf '%-26s %7s %7s %8s %7s %7s %8s %8s %7s %8s' "$label" "$n" "$flushes" "$ours_fsyncs" \
      "$ours_traced" "$ours_blocks" "$(ratio "$ours_fsyncs" "$ours_blocks" 2)" "$qemu_fsyncs" "$qemu_blocks" \
      "$(ratio "$qemu_fsyncs" "$qemu_blocks" 2)")")
  done
  rm -f "$work/ours.vhdx" "$work/qemu.vhdx"
fi

fixed_rows=()
if [ "${SKIP_FIXED:-0}" != 1 ]; then
  echo "== creating a $FIXED_SIZE fixed image"
  fixed_file="$work/fixed.img"
  fixed_cmd() {  # sets cmd
    case $1 in
      vhdx) cmd=("$VHDX" create --type fixed "$fixed_file" "$FIXED_SIZE") ;;
      fallocate) cmd=(fallocate -l "$FIXED_SIZE" "$fixed_file") ;;
      qemu) cmd=(qemu-img create -q -f vhdx -o subformat=fixed "$fixed_file" "$FIXED_SIZE") ;;
    esac
  }
  # Prints "CREATE SYNC": seconds of the command, then of the sync after it.
  fixed_once() {
    local t0 t1 t2 cmd
    fixed_cmd "$1"
    rm -f "$fixed_file"
    sync
    t0=$(date +%s.%N)
    "${cmd[@]}" >/dev/null || die "failed: ${cmd[*]}"
    t1=$(date +%s.%N)
    sync
    t2=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {printf "%.3f %.3f\n", b - a, c - b}'
  }
  # Bytes the command passes to write calls, and its fallocate calls (strace).
  fixed_io() {
    local cmd
    fixed_cmd "$1"
    rm -f "$fixed_file"
    if [ "$have_strace" = 1 ]; then
      strace -f -qq -e trace=write,pwrite64,pwritev,pwritev2,fallocate -o "$work/io.txt" "${cmd[@]}" >/dev/null
      # A call interrupted by another thread's line ends on "<unfinished ...>"
      # and returns on a "<... NAME resumed>" line.
      awk '/ (write|pwrite64|pwritev|pwritev2)\(|<\.\.\. (write|pwrite64|pwritev|pwritev2) resumed>/ &&
           $NF ~ /^[0-9]+$/ {b += $NF}
           / fallocate\(/ {f++} END {printf "%d %d\n", b, f}' "$work/io.txt"
    else
      "${cmd[@]}" >/dev/null
      echo "- -"
    fi
    echo "$(stat -c %s "$fixed_file") $(($(stat -c %b "$fixed_file") * $(stat -c %B "$fixed_file")))"
  }
  for tool in vhdx fallocate qemu; do
    fixed_runs=""
    for ((i = 0; i < REPS; i++)); do fixed_runs+="$(fixed_once "$tool")"$'\n'; done
    echo "  $tool runs (create s, sync s): $(printf '%s' "$fixed_runs" | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
    io=$(fixed_io "$tool")
    written=$(echo "$io" | sed -n 1p | cut -d' ' -f1)
    fallocs=$(echo "$io" | sed -n 1p | cut -d' ' -f2)
    size=$(echo "$io" | sed -n 2p | cut -d' ' -f1)
    allocated=$(echo "$io" | sed -n 2p | cut -d' ' -f2)
    fixed_rows+=("$(printf '%-10s %9s %8s %14s %10s %14s %14s' "$tool" "$(printf '%s' "$fixed_runs" | median 1)" \
      "$(printf '%s' "$fixed_runs" | median 2)" "$written" "$fallocs" "$size" "$allocated")")
    rm -f "$fixed_file"
  done
fi

echo
echo "== results: median of $REPS runs; bench s = the tool's own 'Run completed in' time"
if [ ${#table[@]} -gt 0 ]; then
  printf '%-30s %9s %9s %9s %11s %11s\n' "workload (${WORKLOAD[*]})" "vhdx s" "qemu s" "raw s" "vhdx/raw" "qemu/raw"
  printf '%s\n' "${table[@]}"
  echo "goal: vhdx/raw <= 1.2 (writeback, pattern $PATTERN)"
fi
if [ ${#fsync_rows[@]} -gt 0 ]; then
  echo
  echo "fsyncs (fsync + fdatasync calls) per allocated block; ours: --stats count, and strace's count;"
  echo "flushes: the flushes the workload asks for"
  printf '%-26s %7s %7s %8s %7s %7s %8s %8s %7s %8s\n' "run" requests flushes "vhdx" "strace" "blocks" \
    "per blk" "qemu" "blocks" "per blk"
  printf '%s\n' "${fsync_rows[@]}"
fi
if [ ${#fixed_rows[@]} -gt 0 ]; then
  echo
  echo "$FIXED_SIZE fixed image: median seconds of the command and of the sync after it; bytes written"
  echo "by write calls and fallocate calls (strace); file size and bytes allocated"
  printf '%-10s %9s %8s %14s %10s %14s %14s\n' tool "create s" "sync s" "written" fallocate "size" "allocated"
  printf '%s\n' "${fixed_rows[@]}"
fi
