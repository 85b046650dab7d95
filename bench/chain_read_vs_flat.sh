#!/usr/bin/env bash
# Reading a depth-3 differencing chain against reading the same disk
# flattened into one image, and against libvhdi's vhdimount (FUSE) reading
# the same chain:
#   base.vhdx   2 GiB dynamic, 32 MiB blocks, half full: 1024 pieces of 1 MiB
#               of incompressible data at scattered offsets (fixed seed)
#   mid.avhdx   child of base: ~10% of the disk overwritten by ~800 writes of
#               4-508 KiB at 512-byte-aligned random offsets (fixed seed), so
#               most of its blocks are PARTIALLY_PRESENT with sector bitmaps
#   top.avhdx   child of mid: the same with another seed
#   flat.vhdx   `vhdx convert -O vhdx top.avhdx flat.vhdx` (32 MiB blocks)
# Each read is timed on the chain (top.avhdx) and on flat.vhdx:
#   seq stream  vhdx convert -O raw IMAGE - >/dev/null   (the whole disk, zeros included)
#   seq 1M      vhdx bench -s 1M -c 2048 IMAGE           (the whole disk, depth 64)
#   rand 4K     vhdx bench -s 4k -S 4k*104729 -c 262144 IMAGE, at -d 64 and -d 1
# `vhdx bench` has qemu-img bench's options, which have no random mode; an
# odd stride of 104729 4 KiB-slots wraps modulo the disk (a power of two
# of slots), so the 262144 requests visit distinct pseudo-random 4 KiB slots.
# Then `dd bs=1M` of the chain mounted with vhdimount, against seq stream.
# Runs alternate chain/flat (page cache warm, after one untimed run each);
# medians, ratios chain/flat (goal <= 1.3) and vhdx/vhdimount are printed.
# The three readings (chain, flat, vhdimount) must give the same bytes.
#
#   bench/chain_read_vs_flat.sh [WORKDIR]   scratch files go to a fresh folder
#                                           inside WORKDIR (default /var/tmp),
#                                           removed at exit; needs ~3 GiB free
# Environment: VHDX (our binary, default build/bin/vhdx), REPS (timed runs per
# case, default 5), SIZE (virtual size, default 2G), CHILD_BLOCK_SIZE (block
# size of the two children, default 2M: Hyper-V's default for differencing
# disks), TIMER=date times with `date +%s.%N` even when hyperfine is
# installed.
set -euo pipefail

VHDX=$(realpath -m "${VHDX:-$(dirname "$0")/../build/bin/vhdx}")
base_dir=$(realpath -m "${1:-${TMPDIR:-/var/tmp}}")
REPS=${REPS:-5}
SIZE=${SIZE:-2G}
CHILD_BLOCK_SIZE=${CHILD_BLOCK_SIZE:-2M}
STRIDE_SLOTS=104729  # a prime: odd, so k * stride visits every 4 KiB slot once per lap

bench_name=chain_read_vs_flat
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_vhdx "does not run" --version
require_tools openssl shuf awk sha256sum /usr/bin/time
choose_timer
make_scratch "$base_dir" vhdx-chain-bench

size=$(numfmt --from=iec "$SIZE")
mib=$((size >> 20))
((size % (1 << 20) == 0 && mib >= 64)) || die "SIZE must be a whole number of MiB, at least 64M"

describe() {
  "$VHDX" info "$1" | sed -n "s/^\(type\|block size\|blocks\|disk size\): /  $(basename "$1") \1: /p"
}

versions_line() { echo "vhdx: $VHDX ($("$VHDX" --version)); $( (vhdimount -V 2>/dev/null || true) | head -1)"; }
versions_line
echo "timer: $timer; $REPS runs per case, alternating chain/flat; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== building the chain: $SIZE virtual, base 32M blocks, children $CHILD_BLOCK_SIZE blocks"
raw="$work/base.raw"
truncate -s "$size" "$raw"
slots=$(seq 0 $((mib - 1)) | shuf -n $((mib / 2)) --random-source=<(random_stream 1) | sort -n)
random_stream 2 | {
  for slot in $slots; do dd of="$raw" bs=1M seek="$slot" count=1 conv=notrunc iflag=fullblock status=none; done
}
"$VHDX" convert -O vhdx --block-size 32M "$raw" "$work/base.vhdx"
rm -f "$raw"
"$VHDX" create --parent "$work/base.vhdx" --block-size "$CHILD_BLOCK_SIZE" "$work/mid.avhdx" >/dev/null
overwrite_tenth "$work/mid.avhdx" 11
"$VHDX" create --parent "$work/mid.avhdx" --block-size "$CHILD_BLOCK_SIZE" "$work/top.avhdx" >/dev/null
overwrite_tenth "$work/top.avhdx" 12
"$VHDX" convert -O vhdx --block-size 32M "$work/top.avhdx" "$work/flat.vhdx"
for f in base.vhdx mid.avhdx top.avhdx flat.vhdx; do describe "$work/$f"; done

echo "== checking that the chain and the flattened image read the same"
chain_sha=$("$VHDX" convert -O raw "$work/top.avhdx" - | sha256sum | cut -d' ' -f1)
flat_sha=$("$VHDX" convert -O raw "$work/flat.vhdx" - | sha256sum | cut -d' ' -f1)
[ "$chain_sha" = "$flat_sha" ] || die "the chain and the flattened image read differently"
echo "  sha256 $chain_sha (both)"

# timed_runs LABEL NAME_A NAME_B CMD_A... -- CMD_B...: one untimed run of each,
# then REPS alternating timed runs; sets med_c, med_f (median wall s of A and
# B) and cpu_c, cpu_f (median CPU s).
timed_runs() {
  local label=$1 name_a=$2 name_b=$3 chain_cmd=() flat_cmd=() runs_c=() runs_f=() i
  shift 3
  while [ "$1" != -- ]; do chain_cmd+=("$1"); shift; done
  shift
  flat_cmd=("$@")
  time_once "$work/none" "${chain_cmd[@]}" >/dev/null
  time_once "$work/none" "${flat_cmd[@]}" >/dev/null
  for ((i = 0; i < REPS; i++)); do
    if ((i % 2 == 0)); then
      runs_c+=("$(time_once "$work/none" "${chain_cmd[@]}")")
      runs_f+=("$(time_once "$work/none" "${flat_cmd[@]}")")
    else
      runs_f+=("$(time_once "$work/none" "${flat_cmd[@]}")")
      runs_c+=("$(time_once "$work/none" "${chain_cmd[@]}")")
    fi
  done
  echo "  $label runs (wall s, CPU s): $name_a $(printf '[%s] ' "${runs_c[@]}")"
  echo "  $(printf '%*s' ${#label} '')                    $name_b $(printf '[%s] ' "${runs_f[@]}")"
  med_c=$(printf '%s\n' "${runs_c[@]}" | median 1)
  med_f=$(printf '%s\n' "${runs_f[@]}" | median 1)
  cpu_c=$(printf '%s\n' "${runs_c[@]}" | median 2)
  cpu_f=$(printf '%s\n' "${runs_f[@]}" | median 2)
}

table=()
row() {  # LABEL: appends the last timed_runs result
  table+=("$(printf '%-28s %8s %8s %8s   %8s %8s %8s' "$1" "$med_c" "$med_f" "$(ratio "$med_c" "$med_f")" \
    "$cpu_c" "$cpu_f" "$(ratio "$cpu_c" "$cpu_f")")")
}

echo "== timing (page cache warm)"
timed_runs "seq stream" chain flat "$VHDX" convert -O raw "$work/top.avhdx" - -- "$VHDX" convert -O raw "$work/flat.vhdx" -
row "seq: convert -O raw -"
seq_stream_chain=$med_c
timed_runs "seq 1M" chain flat "$VHDX" bench -s 1M -c $((size >> 20)) "$work/top.avhdx" -- \
  "$VHDX" bench -s 1M -c $((size >> 20)) "$work/flat.vhdx"
row "seq: bench -s 1M (d 64)"
stride=$((4096 * STRIDE_SLOTS))
count=$((size / 4096 / 2))
for depth in 64 1; do
  timed_runs "rand 4K d$depth" chain flat "$VHDX" bench -d $depth -s 4k -S $stride -c $count "$work/top.avhdx" -- \
    "$VHDX" bench -d $depth -s 4k -S $stride -c $count "$work/flat.vhdx"
  row "rand: bench -s 4k -d $depth"
done

mount_line="vhdimount: not run"
if command -v vhdimount >/dev/null && [ -w /dev/fuse ]; then
  mnt="$work/mnt"
  mkdir -p "$mnt"
  # vhdimount opens each parent by the file name in the locator, in the
  # child's folder; it exposes the base as vhdi1 and the image named on the
  # command line (here the third level) as vhdi3.
  if vhdimount "$work/top.avhdx" "$mnt" >/dev/null 2>&1 && [ -e "$mnt/vhdi3" ]; then
    # The mount may be gone already (unmounted below): never fail the exit on it.
    trap 'fusermount -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
    fuse_sha=$(sha256sum <"$mnt/vhdi3" | cut -d' ' -f1)
    [ "$fuse_sha" = "$chain_sha" ] || die "vhdimount reads the chain differently ($fuse_sha)"
    echo "  vhdimount reads the same sha256"
    timed_runs "seq vhdimount" vhdimount vhdx dd if="$mnt/vhdi3" of=/dev/null bs=1M -- \
      "$VHDX" convert -O raw "$work/top.avhdx" -
    vhdimount_s=$med_c
    mount_line=$(printf '%-28s %8s %8s %8s   (vhdx seq stream on the chain / dd of vhdimount; CPU: vhdimount process not counted)' \
      "seq: vhdx / vhdimount" "$med_f" "$vhdimount_s" "$(ratio "$med_f" "$vhdimount_s")")
    fusermount -u "$mnt" 2>/dev/null || umount "$mnt"
  else
    mount_line="vhdimount: cannot mount here"
  fi
else
  mount_line="vhdimount: not installed or no /dev/fuse"
fi

echo
echo "== results: median of $REPS warm runs, wall-clock and user+system CPU seconds of the vhdx process"
printf '%-28s %8s %8s %8s   %8s %8s %8s\n' case "chain s" "flat s" ratio "chain CPU" "flat CPU" ratio
printf '%s\n' "${table[@]}"
echo "$mount_line"
echo "seq MB/s: chain $(awk -v s="$size" -v t="$seq_stream_chain" 'BEGIN {printf "%.0f", s / t / 1e6}')"
echo "goal: chain/flat <= 1.3"
