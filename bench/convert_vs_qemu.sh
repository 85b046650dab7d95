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

bench_name=convert_vs_qemu
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_vhdx "does not run" --version
require_tools qemu-img qemu-io openssl shuf cmp /usr/bin/time
choose_timer
check_cold
make_scratch "$base" vhdx-bench

table=()
# bench_pair LABEL IMAGE: times both converts of IMAGE into $work/ours.raw and
# $work/qemu.raw, leaving the last outputs in place for verification.
bench_pair() {
  local label=$1 image=$2
  local ours=("$VHDX" convert -O raw "$image" "$work/ours.raw")
  local qemu=(qemu-img convert -f vhdx -O raw "$image" "$work/qemu.raw")
  local size wall_o wall_q min_o min_q cpu_o cpu_q cold_o cold_q rss_o rss_q
  size=$(qemu-img info --output=json "$image" | sed -n 's/^ *"virtual-size": *\([0-9]*\),*$/\1/p')
  compare_pair "$work/ours.raw" "$work/qemu.raw"
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

versions_line
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
print_results_legend
printf '%-19s %-10s %8s %8s %8s %8s %8s %10s\n' case tool "wall s" "MB/s" "best s" "CPU s" "cold s" "peak RSS"
printf '%s\n' "${table[@]}"
echo "goals: ours/qemu wall <= 0.9 on (a), < 0.1 on (b)"
