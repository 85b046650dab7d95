#!/usr/bin/env bash
# raw -> VHDX conversion speed, side by side with the peer:
#   ours:  vhdx convert -O vhdx --block-size B SRC DST
#   peer:  qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=B SRC DST
# on a 2 GiB sparse raw disk about half filled with incompressible data, in
# runs of 4 KiB to 16 MiB (log-uniform sizes) separated by holes of the same
# sizes; sizes and bytes come from a fixed seed, so every run converts the
# same disk. Both tools write a dynamic image with the same block size and
# neither flushes (their default cache mode 'unsafe').
# Runs alternate ours/peer (page cache warm, after one untimed warm-up run
# each), then one cold run each when the page cache can be dropped; the
# medians, MB/s of virtual disk, peak RSS and ratio ours/peer are printed,
# and both outputs are checked (qemu-img check, and qemu-img compare against
# the raw source).
#
#   bench/convert_to_vhdx_vs_qemu.sh [WORKDIR]   scratch files go to a fresh
#                                                folder inside WORKDIR (default
#                                                /var/tmp), removed at exit
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
DISK_SIZE=$((2 << 30))

bench_name=convert_to_vhdx_vs_qemu
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_vhdx "does not run" --version
require_tools qemu-img openssl od awk dd /usr/bin/time
choose_timer
check_cold
make_scratch "$base" vhdx-bench

versions_line
echo "timer: $timer; $REPS warm runs per tool, alternating; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# The source: "offset length" of each data run. Sizes are 4 KiB multiples,
# log-uniform from 4 KiB to 16 MiB, drawn from 32-bit words of a keyed
# stream; a hole of the same distribution comes before each run.
echo "== 2 GiB raw disk, about half data in runs of 4 KiB-16 MiB with holes; VHDX block size $BLOCK_SIZE"
raw="$work/src.raw"
truncate -s "$DISK_SIZE" "$raw"
random_stream 3 | od -An -tu4 -w4 -v -N 40000 | awk -v total="$DISK_SIZE" '
  function size(u) { return int(2 ^ (12 + (u % 4096) / 4096 * 12) / 4096) * 4096 }
  { v[NR] = $1 }
  END {
    off = 0; i = 1
    while (1) {
      off += size(v[i++]); if (off >= total) break
      len = size(v[i++]); if (off + len > total) len = total - off
      print off, len; off += len
    }
  }' >"$work/runs"
random_stream 4 | while read -r -u 3 off len; do
  dd of="$raw" bs=4K seek=$((off / 4096)) count=$((len / 4096)) conv=notrunc iflag=fullblock status=none
done 3<"$work/runs"
data=$(awk '{s += $2} END {print s}' "$work/runs")
echo "  $(wc -l <"$work/runs") data runs, $data bytes of data ($(awk -v d="$data" -v t="$DISK_SIZE" 'BEGIN {printf "%.1f", 100 * d / t}')% of the disk)"

ours=("$VHDX" convert -O vhdx --block-size "$BLOCK_SIZE" "$raw" "$work/ours.vhdx")
qemu=(qemu-img convert -f raw -O vhdx -o "subformat=dynamic,block_size=$BLOCK_SIZE" "$raw" "$work/qemu.vhdx")
compare_pair "$work/ours.vhdx" "$work/qemu.vhdx"

# Both outputs must pass qemu-img check and hold the source's bytes.
for f in "$work/ours.vhdx" "$work/qemu.vhdx"; do
  qemu-img check -q -f vhdx "$f" || die "qemu-img check fails on $f"
  qemu-img compare -q -f raw -F vhdx "$raw" "$f" || die "$f differs from the source raw disk"
done
echo "  both outputs pass qemu-img check and equal the source ($(du -m "$work/ours.vhdx" | cut -f1) MiB" \
  "allocated vhdx, $(du -m "$work/qemu.vhdx" | cut -f1) MiB qemu-img)"

mbps() { awk -v s="$DISK_SIZE" -v t="$1" 'BEGIN {printf "%.0f", s / t / 1e6}'; }
echo
print_results_legend
printf '%-10s %8s %8s %8s %8s %8s %10s\n' tool "wall s" "MB/s" "best s" "CPU s" "cold s" "peak RSS"
printf '%-10s %8s %8s %8s %8s %8s %10s\n' vhdx "$wall_o" "$(mbps "$wall_o")" "$min_o" "$cpu_o" "$cold_o" "$rss_o MiB"
printf '%-10s %8s %8s %8s %8s %8s %10s\n' qemu-img "$wall_q" "$(mbps "$wall_q")" "$min_q" "$cpu_q" "$cold_q" "$rss_q MiB"
printf '%-10s %8s %8s %8s %8s %8s %10s\n' ours/qemu "$(ratio "$wall_o" "$wall_q")" "" "$(ratio "$min_o" "$min_q")" \
  "$(ratio "$cpu_o" "$cpu_q")" "$(ratio "$cold_o" "$cold_q")" "$(ratio "$rss_o" "$rss_q")"
echo "goal: ours/qemu wall <= 0.9"
