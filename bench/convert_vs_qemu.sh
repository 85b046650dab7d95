#!/usr/bin/env bash
# Conversion speed, side by side with the peer, on the same inputs:
#   raw-1M, raw-8M, raw-32M   vhdx convert -O raw IMG   vs  qemu-img convert -f vhdx -O raw IMG
#                             IMG: a $SIZE disk half full of incompressible
#                             data in 1 MiB pieces at scattered offsets (fixed
#                             seed), made by `qemu-img convert -O vhdx` with
#                             1, 8 and 32 MiB blocks
#   raw-sparse                the same, on a 64 GiB disk holding 8 MiB
#   raw-chain                 vhdx convert -O raw CHILD  vs  qemu-img convert
#                             of the flattened chain (qemu-img cannot open a
#                             differencing image): CHILD is a 2 MiB-block
#                             child of the 8 MiB-block image with ~10% of the
#                             disk rewritten in partial blocks
#   vhdx-from-raw             vhdx convert -O vhdx RAW  vs  qemu-img convert -f raw -O vhdx RAW
#   vhdx-from-vhdx            vhdx convert -O vhdx IMG  vs  qemu-img convert -f vhdx -O vhdx IMG
#                             (8 MiB blocks, dynamic, for both tools)
# Runs alternate ours/peer (page cache warm, after one untimed warm-up run
# each), then one cold run each when the page cache can be dropped; the
# medians, MB/s of virtual disk, peak RSS and ratio ours/peer are printed.
# Every pair of outputs is checked: raw outputs hold the same bytes and
# have the same allocated extents (both leave the same zero runs unwritten),
# VHDX outputs pass qemu-img check and equal the source.
#
#   bench/convert_vs_qemu.sh [WORKDIR]     scratch files go to a fresh folder
#                                          inside WORKDIR (default /var/tmp),
#                                          removed at exit
# Environment: VHDX (our binary, default build/bin/vhdx), REPS (warm runs per
# tool, default 5), SIZE (disk size of the half-full cases, default 1G),
# CASES (a space-separated subset of the case names above), COLD=0 skips the
# cold runs, TIMER=date times with `date +%s.%N` even when hyperfine is
# installed.
set -euo pipefail

# Paths given by the caller are relative to where it runs.
VHDX=$(realpath -m "${VHDX:-$(dirname "$0")/../build/bin/vhdx}")
base=$(realpath -m "${1:-${TMPDIR:-/var/tmp}}")
REPS=${REPS:-5}
COLD=${COLD:-1}
SIZE=${SIZE:-1G}
CASES=${CASES:-raw-1M raw-8M raw-32M raw-sparse raw-chain vhdx-from-raw vhdx-from-vhdx}

bench_name=convert_vs_qemu
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_vhdx "does not run" --version
require_tools qemu-img qemu-io openssl shuf cmp awk /usr/bin/time
choose_timer
check_cold
make_scratch "$base" vhdx-bench
size=$(numfmt --from=iec "$SIZE")
mib=$((size >> 20))
((size % (1 << 20) == 0 && mib >= 64)) || die "SIZE must be a whole number of MiB, at least 64M"
wants() { [[ " $CASES " == *" $1 "* ]]; }

table=()
# bench_pair LABEL VIRTUAL_SIZE OURS_OUT QEMU_OUT: times the caller's arrays
# ours and qemu (compare_pair) and adds their rows to the table.
bench_pair() {
  local label=$1 vsize=$2 wall_o wall_q min_o min_q cpu_o cpu_q cold_o cold_q rss_o rss_q
  compare_pair "$3" "$4"
  mbps() { awk -v s="$vsize" -v t="$1" 'BEGIN {printf "%.0f", s / t / 1e6}'; }
  table+=("$(printf '%-15s %-10s %8s %8s %8s %8s %8s %10s' "$label" vhdx "$wall_o" "$(mbps "$wall_o")" \
    "$min_o" "$cpu_o" "$cold_o" "$rss_o MiB")")
  table+=("$(printf '%-15s %-10s %8s %8s %8s %8s %8s %10s' "" qemu-img "$wall_q" "$(mbps "$wall_q")" \
    "$min_q" "$cpu_q" "$cold_q" "$rss_q MiB")")
  table+=("$(printf '%-15s %-10s %8s %8s %8s %8s %8s %10s' "" ours/qemu "$(ratio "$wall_o" "$wall_q")" "" \
    "$(ratio "$min_o" "$min_q")" "$(ratio "$cpu_o" "$cpu_q")" "$(ratio "$cold_o" "$cold_q")" \
    "$(ratio "$rss_o" "$rss_q")")")
}

# The allocated extents of a raw file, as qemu-img map sees them (SEEK_DATA/
# SEEK_HOLE): "start length data" lines, adjacent equal ranges merged.
raw_extents() {
  qemu-img map -f raw --output=json "$1" | tr -d ' ' | tr '{}' '\n\n' |
    sed -n 's/.*"start":\([0-9]*\),"length":\([0-9]*\),.*"data":\([a-z]*\).*/\1 \2 \3/p' |
    awk '$3 == prev && $1 == end {len += $2; end += $2; next}
         {if (NR > 1) print start, len, prev; start = $1; len = $2; end = $1 + $2; prev = $3}
         END {if (NR) print start, len, prev}'
}

# verify_raw VIRTUAL_SIZE [SOURCE_RAW]: both raw outputs have the virtual
# size, hold the same bytes, and are allocated in the same places; with
# SOURCE_RAW, they equal it.
verify_raw() {
  local vsize=$1 f
  for f in "$work/ours.raw" "$work/qemu.raw"; do
    [ "$(stat -c %s "$f")" = "$vsize" ] || die "$f is $(stat -c %s "$f") bytes, expected $vsize"
  done
  # qemu-img compare reads the raw files through SEEK_DATA/SEEK_HOLE, so a
  # 64 GiB sparse file costs what its data costs; holes compare as zeros.
  qemu-img compare -q -f raw -F raw "$work/ours.raw" "$work/qemu.raw" || die "vhdx and qemu-img outputs differ"
  raw_extents "$work/ours.raw" >"$work/ours.map"
  raw_extents "$work/qemu.raw" >"$work/qemu.map"
  cmp -s "$work/ours.map" "$work/qemu.map" ||
    die "the outputs are allocated differently (diff $work/ours.map $work/qemu.map)"
  if [ -n "${2:-}" ]; then
    cmp "$2" "$work/ours.raw" || die "vhdx output differs from the source raw disk"
  fi
  echo "  outputs identical, allocated in the same $(grep -c true "$work/ours.map") extents" \
    "($(du -m "$work/ours.raw" | cut -f1) MiB vhdx, $(du -m "$work/qemu.raw" | cut -f1) MiB qemu-img)"
  rm -f "$work/ours.raw" "$work/qemu.raw"
}

# verify_vhdx SOURCE SOURCE_FORMAT: both VHDX outputs pass qemu-img check and
# hold the source's bytes.
verify_vhdx() {
  local f
  for f in "$work/ours.vhdx" "$work/qemu.vhdx"; do
    qemu-img check -q -f vhdx "$f" || die "qemu-img check fails on $f"
    qemu-img compare -q -f "$2" -F vhdx "$1" "$f" || die "$f differs from the source $1"
  done
  echo "  both outputs pass qemu-img check and equal the source ($(du -m "$work/ours.vhdx" | cut -f1) MiB" \
    "allocated vhdx, $(du -m "$work/qemu.vhdx" | cut -f1) MiB qemu-img)"
  rm -f "$work/ours.vhdx" "$work/qemu.vhdx"
}

describe() {
  "$VHDX" info "$1" | sed -n "s/^\(type\|block size\|blocks\|disk size\): /  $(basename "$1") \1: /p"
}

# to_raw LABEL IMAGE [SOURCE_RAW] [QEMU_IMAGE]: the -O raw pair on IMAGE
# (qemu-img reads QEMU_IMAGE, default IMAGE), then verify_raw.
to_raw() {
  local label=$1 image=$2 src=${3:-} qimage=${4:-$2}
  local vsize
  vsize=$(qemu-img info --output=json "$qimage" | sed -n 's/^ *"virtual-size": *\([0-9]*\),*$/\1/p')
  ours=("$VHDX" convert -O raw "$image" "$work/ours.raw")
  qemu=(qemu-img convert -f vhdx -O raw "$qimage" "$work/qemu.raw")
  bench_pair "$label" "$vsize" "$work/ours.raw" "$work/qemu.raw"
  verify_raw "$vsize" "$src"
}

versions_line
echo "timer: $timer; $REPS warm runs per tool, alternating; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# The half-full raw disk every other case starts from.
raw="$work/half.raw"
truncate -s "$size" "$raw"
slots=$(seq 0 $((mib - 1)) | shuf -n $((mib / 2)) --random-source=<(random_stream 1) | sort -n)
random_stream 2 | {
  for slot in $slots; do dd of="$raw" bs=1M seek="$slot" count=1 conv=notrunc iflag=fullblock status=none; done
}
qemu-img convert -f raw -O vhdx -o block_size=8M "$raw" "$work/half-8M.vhdx"

for bs in 1M 8M 32M; do
  wants "raw-$bs" || continue
  echo "== raw-$bs: $SIZE disk, half full in 1 MiB pieces, made by qemu-img with $bs blocks"
  [ -f "$work/half-$bs.vhdx" ] || qemu-img convert -f raw -O vhdx -o block_size="$bs" "$raw" "$work/half-$bs.vhdx"
  describe "$work/half-$bs.vhdx"
  to_raw "raw-$bs" "$work/half-$bs.vhdx" "$raw"
  [ "$bs" = 8M ] || rm -f "$work/half-$bs.vhdx"
done

if wants raw-sparse; then
  echo "== raw-sparse: 64 GiB disk, 8 MiB of data, 32 MiB blocks"
  qemu-img create -q -f vhdx -o block_size=32M "$work/sparse.vhdx" 64G
  writes=()
  for k in 0 1 2 3 4 5 6 7; do  # 1 MiB at 8 GiB strides, each at a different block offset
    writes+=(-c "write -P $((0x11 * (k + 1))) $(((k << 33) + k * (3 << 20))) 1M")
  done
  qemu-io -f vhdx "${writes[@]}" "$work/sparse.vhdx" >/dev/null
  describe "$work/sparse.vhdx"
  to_raw raw-sparse "$work/sparse.vhdx"
  rm -f "$work/sparse.vhdx"
fi

if wants raw-chain; then
  echo "== raw-chain: child (2 MiB blocks, ~10% rewritten) of the 8 MiB-block image, against its flattened copy"
  "$VHDX" create --parent "$work/half-8M.vhdx" "$work/child.avhdx" >/dev/null
  overwrite_tenth "$work/child.avhdx" 7
  "$VHDX" convert -O vhdx --block-size 8M "$work/child.avhdx" "$work/flat.vhdx"
  describe "$work/child.avhdx"
  to_raw raw-chain "$work/child.avhdx" "" "$work/flat.vhdx"
  rm -f "$work/child.avhdx" "$work/flat.vhdx"
fi

# to_vhdx LABEL SOURCE FORMAT: the -O vhdx pair (dynamic, 8 MiB blocks for
# both tools) on SOURCE, then verify_vhdx against the half-full raw disk.
to_vhdx() {
  ours=("$VHDX" convert -O vhdx --block-size 8M "$2" "$work/ours.vhdx")
  qemu=(qemu-img convert -f "$3" -O vhdx -o subformat=dynamic,block_size=8M "$2" "$work/qemu.vhdx")
  bench_pair "$1" "$size" "$work/ours.vhdx" "$work/qemu.vhdx"
  verify_vhdx "$raw" raw
}
if wants vhdx-from-raw; then
  echo "== vhdx-from-raw: the $SIZE half-full raw disk to a dynamic VHDX with 8 MiB blocks"
  to_vhdx vhdx-from-raw "$raw" raw
fi
if wants vhdx-from-vhdx; then
  echo "== vhdx-from-vhdx: the 8 MiB-block image to a dynamic VHDX with 8 MiB blocks"
  to_vhdx vhdx-from-vhdx "$work/half-8M.vhdx" vhdx
fi

echo
print_results_legend
printf '%-15s %-10s %8s %8s %8s %8s %8s %10s\n' case tool "wall s" "MB/s" "best s" "CPU s" "cold s" "peak RSS"
printf '%s\n' "${table[@]}"
echo "goals: ours/qemu wall <= 0.8 on every case (raw-sparse: < 0.1)"
