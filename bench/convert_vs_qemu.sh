#!/usr/bin/env bash
# VHDX -> raw conversion speed, side by side with the peer:
#   ours:  vhdx convert -O raw SRC DST
#   peer:  qemu-img convert -f vhdx -O raw SRC DST
# on two images made by QEMU:
#   (a) 2 GiB disk, 1 GiB of incompressible data in 1 MiB pieces at
#       scattered offsets (fixed seed), the rest holes;
#   (b) 64 GiB disk holding 8 MiB of data (qemu-img create + qemu-io writes).
# Runs alternate ours/peer (page cache warm, after one untimed warm-up run
# each), then one cold run each when the page cache can be dropped; the
# medians, MB/s of virtual disk, peak RSS and ratio ours/peer are printed,
# and both outputs are checked to hold the same bytes.
#
#   bench/convert_vs_qemu.sh [WORKDIR]     scratch files go to a fresh folder
#                                          inside WORKDIR (default /var/tmp),
#                                          removed at exit
# Environment: VHDX (our binary, default build/bin/vhdx), REPS (warm runs per
# tool, default 5), BLOCK_SIZE (VHDX block size, default 32M), COLD=0 skips
# the cold runs, TIMER=date times with `date +%s.%N` even when hyperfine is
# installed.
set -euo pipefail

# Paths given by the caller are relative to where it runs.
VHDX=$(realpath -m "${VHDX:-$(dirname "$0")/../build/bin/vhdx}")
base=$(realpath -m "${1:-${TMPDIR:-/var/tmp}}")
REPS=${REPS:-5}
BLOCK_SIZE=${BLOCK_SIZE:-32M}
COLD=${COLD:-1}

die() { echo "convert_vs_qemu: $*" >&2; exit 1; }
[ -x "$VHDX" ] || die "$VHDX not found (run scripts/bootstrap, or set VHDX=path/to/vhdx)"
"$VHDX" --version >/dev/null || die "$VHDX does not run"
for tool in qemu-img qemu-io openssl shuf cmp /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
if [ "${TIMER:-}" != date ] && command -v hyperfine >/dev/null; then timer=hyperfine; else timer=date; fi
if [ "$COLD" = 1 ] && ! { [ -w /proc/sys/vm/drop_caches ] && sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  COLD=0
  echo "note: cannot drop the page cache here (needs root); cold runs skipped"
fi

mkdir -p "$base"
work=$(mktemp -d "$base/vhdx-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# A deterministic stream of incompressible bytes (AES-CTR of zeros, fixed key).
random_stream() {
  openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv 0 </dev/zero 2>/dev/null || true
}

# One run of "$@" after removing its output file and flushing earlier runs'
# dirty pages (so no run pays for another's writeback). Prints "WALL CPU":
# wall-clock and user+system seconds.
time_once() {
  local out=$1
  shift
  rm -f "$out"
  sync
  if [ "$timer" = hyperfine ]; then
    hyperfine -N --runs 1 --style none --export-json "$work/run.json" "$(printf '%q ' "$@")" >/dev/null 2>&1 ||
      die "failed: $*"
    awk -F'[:,]' '/"mean"/ {w = $2} /"user"/ {u = $2} /"system"/ {s = $2} END {printf "%.3f %.3f\n", w, u + s}' \
      "$work/run.json"
  else
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$work/cpu" "$@" >/dev/null 2>&1 || die "failed: $*"
    t1=$(date +%s.%N)
    awk -v t0="$t0" -v t1="$t1" '{printf "%.3f %.3f\n", t1 - t0, $1 + $2}' "$work/cpu"
  fi
}

# Median of the numbers in column $1 of stdin.
median() {
  cut -d' ' -f"$1" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# Peak resident set size of one run, in MiB.
peak_rss_mib() {
  local out=$1
  shift
  rm -f "$out"
  /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null 2>&1 || die "failed: $*"
  awk '{v = $1} END {printf "%.1f\n", v / 1024}' "$work/rss"
}

drop_caches() { sync && echo 3 >/proc/sys/vm/drop_caches; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-") print "-"; else printf "%.3f", a / b}'; }

table=()
# bench_pair LABEL IMAGE: times both converts of IMAGE into $work/ours.raw and
# $work/qemu.raw, leaving the last outputs in place for verification.
bench_pair() {
  local label=$1 image=$2
  local ours=("$VHDX" convert -O raw "$image" "$work/ours.raw")
  local qemu=(qemu-img convert -f vhdx -O raw "$image" "$work/qemu.raw")
  local size runs_ours=() runs_qemu=() i
  size=$(qemu-img info --output=json "$image" | sed -n 's/^ *"virtual-size": *\([0-9]*\),*$/\1/p')
  time_once "$work/ours.raw" "${ours[@]}" >/dev/null  # warm-up: source in the page cache
  time_once "$work/qemu.raw" "${qemu[@]}" >/dev/null
  for ((i = 0; i < REPS; i++)); do  # alternate, and alternate who goes first
    if ((i % 2 == 0)); then
      runs_ours+=("$(time_once "$work/ours.raw" "${ours[@]}")")
      runs_qemu+=("$(time_once "$work/qemu.raw" "${qemu[@]}")")
    else
      runs_qemu+=("$(time_once "$work/qemu.raw" "${qemu[@]}")")
      runs_ours+=("$(time_once "$work/ours.raw" "${ours[@]}")")
    fi
  done
  echo "  warm runs (wall s, CPU s): vhdx $(printf '[%s] ' "${runs_ours[@]}")"
  echo "                             qemu-img $(printf '[%s] ' "${runs_qemu[@]}")"
  local wall_o wall_q min_o min_q cpu_o cpu_q cold_o=- cold_q=- rss_o rss_q
  wall_o=$(printf '%s\n' "${runs_ours[@]}" | median 1)
  wall_q=$(printf '%s\n' "${runs_qemu[@]}" | median 1)
  min_o=$(printf '%s\n' "${runs_ours[@]}" | sort -g | head -1 | cut -d' ' -f1)
  min_q=$(printf '%s\n' "${runs_qemu[@]}" | sort -g | head -1 | cut -d' ' -f1)
  cpu_o=$(printf '%s\n' "${runs_ours[@]}" | median 2)
  cpu_q=$(printf '%s\n' "${runs_qemu[@]}" | median 2)
  rss_o=$(peak_rss_mib "$work/ours.raw" "${ours[@]}")
  rss_q=$(peak_rss_mib "$work/qemu.raw" "${qemu[@]}")
  if [ "$COLD" = 1 ]; then
    drop_caches
    cold_o=$(time_once "$work/ours.raw" "${ours[@]}" | cut -d' ' -f1)
    drop_caches
    cold_q=$(time_once "$work/qemu.raw" "${qemu[@]}" | cut -d' ' -f1)
  fi
  mbps() { awk -v s="$size" -v t="$1" 'BEGIN {printf "%.0f", s / t / 1e6}'; }
  table+=("$(printf '%-19s %-10s %8s %8s %8s %8s %8s %10s' "$label" vhdx "$wall_o" "$(mbps "$wall_o")" \
    "$min_o" "$cpu_o" "$cold_o" "$rss_o MiB")")
  table+=("$(printf '%-19s %-10s %8s %8s %8s %8s %8s %10s' "" qemu-img "$wall_q" "$(mbps "$wall_q")" \
    "$min_q" "$cpu_q" "$cold_q" "$rss_q MiB")")
  table+=("$(printf '%-19s %-10s %8s %8s %8s %8s %8s %10s' "" ours/qemu "$(ratio "$wall_o" "$wall_q")" "" \
    "$(ratio "$min_o" "$min_q")" "$(ratio "$cpu_o" "$cpu_q")" "$(ratio "$cold_o" "$cold_q")" \
    "$(ratio "$rss_o" "$rss_q")")")
}

# Both outputs must be raw images of the virtual size holding the same bytes.
verify_same() {
  local size=$1 f
  for f in "$work/ours.raw" "$work/qemu.raw"; do
    [ "$(stat -c %s "$f")" = "$size" ] || die "$f is $(stat -c %s "$f") bytes, expected $size"
  done
  # qemu-img compare reads the raw files through SEEK_DATA/SEEK_HOLE, so a
  # 64 GiB sparse file costs what its data costs; holes compare as zeros.
  qemu-img compare -q -f raw -F raw "$work/ours.raw" "$work/qemu.raw" ||
    die "vhdx and qemu-img outputs differ"
  echo "  outputs identical ($(du -m "$work/ours.raw" | cut -f1) MiB allocated vhdx," \
    "$(du -m "$work/qemu.raw" | cut -f1) MiB qemu-img)"
}

echo "vhdx: $VHDX ($("$VHDX" --version)); $(qemu-img --version | head -1)"
echo "timer: $timer; $REPS warm runs per tool, alternating; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== (a) 2 GiB disk, 1 GiB random data in 1 MiB pieces, VHDX block size $BLOCK_SIZE"
raw="$work/a.raw"
truncate -s 2G "$raw"
slots=$(seq 0 2047 | shuf -n 1024 --random-source=<(random_stream 1) | sort -n)
random_stream 2 | {
  for slot in $slots; do dd of="$raw" bs=1M seek="$slot" count=1 conv=notrunc iflag=fullblock status=none; done
}
qemu-img convert -f raw -O vhdx -o block_size="$BLOCK_SIZE" "$raw" "$work/a.vhdx"
"$VHDX" info "$work/a.vhdx" | sed -n 's/^\(block size\|blocks\|disk size\): /  \1: /p'
bench_pair "2 GiB, 1 GiB data" "$work/a.vhdx"
verify_same $((2 << 30))
cmp "$raw" "$work/ours.raw" || die "vhdx output differs from the source raw disk"
echo "  both equal the source raw disk"
rm -f "$raw" "$work/ours.raw" "$work/qemu.raw" "$work/a.vhdx"

echo "== (b) 64 GiB disk, 8 MiB of data, VHDX block size $BLOCK_SIZE"
qemu-img create -q -f vhdx -o block_size="$BLOCK_SIZE" "$work/b.vhdx" 64G
writes=()
for k in 0 1 2 3 4 5 6 7; do  # 1 MiB at 8 GiB strides, each at a different block offset
  writes+=(-c "write -P $((0x11 * (k + 1))) $(((k << 33) + k * (3 << 20))) 1M")
done
qemu-io -f vhdx "${writes[@]}" "$work/b.vhdx" >/dev/null
"$VHDX" info "$work/b.vhdx" | sed -n 's/^\(block size\|blocks\|disk size\): /  \1: /p'
bench_pair "64 GiB, 8 MiB data" "$work/b.vhdx"
verify_same $((64 << 30))

echo
echo "== results: median of $REPS warm runs; MB/s = 10^6 bytes of virtual disk per second;"
echo "   best = fastest warm run; CPU = median user+system; cold = one run after dropping the page cache"
printf '%-19s %-10s %8s %8s %8s %8s %8s %10s\n' case tool "wall s" "MB/s" "best s" "CPU s" "cold s" "peak RSS"
printf '%s\n' "${table[@]}"
echo "goals: ours/qemu wall <= 0.9 on (a), < 0.1 on (b)"
