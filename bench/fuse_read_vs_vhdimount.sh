#!/usr/bin/env bash
# Sequential read through a FUSE mount: `vhdx mount` against libvhdi's
# vhdimount, both mounting the same image read-only:
#   image   2 GiB dynamic VHDX, 32 MiB blocks (BLOCK_SIZE), half full: 1024 pieces of
#           1 MiB of incompressible data at scattered 1 MiB slots (fixed
#           seed), made by `vhdx convert -O vhdx --block-size 32M` from a
#           sparse raw disk (the image of nbd_read_vs_qemu_nbd.sh)
#   vhdx    vhdx mount -r IMAGE MNT_VHDX         -> MNT_VHDX/disk, which
#           splices the image's data to the kernel (one more row with
#           --no-splice, every reply copied through the daemon)
#   vhdi    vhdimount IMAGE MNT_VHDI             -> MNT_VHDI/vhdi1
#   ceiling fuse_ceiling SIZE MNT_CEIL           -> MNT_CEIL/disk, a FUSE
#           server that reads nothing (its bytes come from memory), with
#           the mount settings of `vhdx mount -r`: how fast any daemon can
#           be read through FUSE on this machine
# When root, `vhdx mount` raises its mount's readahead from FUSE's 128 KiB
# to 2 MiB; the script gives vhdimount's mount the same (sysfs), so the
# kernel sends both daemons requests of the same size.
# Timed (the image file's pages warm in the page cache), with REPS runs
# alternating which mount goes first, after one untimed run each:
#   first read, bs=1M / 128K / 512   dd if=FILE of=/dev/null bs=N, each run
#                     on a fresh mount (unmounted and mounted again, outside
#                     the timing), so the kernel holds no cached page of the
#                     disk file: what copying a disk out once costs. 512 is
#                     dd's default block size.
#   re-read, bs=1M    the same on a mount that has been read before: `vhdx
#                     mount` keeps the kernel's page cache of the disk file
#                     across opens (the image cannot change behind it);
#                     vhdimount's cache is dropped at each open.
# and, with COLD=1 (root only), one run of dd bs=1M each after dropping the
# page cache. Before timing, `sha256sum` of both files must equal `vhdx
# convert -O raw IMAGE - | sha256sum`. The results are medians of
# wall-clock time, MB/s (10^6 bytes of virtual disk per second), the ratio
# vhdimount time / vhdx mount time (goal: >= 2), vhdx mount's throughput as
# a share of the ceiling's, and the CPU time of each
# mount's daemon during the run (utime + stime of /proc/PID/stat, all
# threads; dd's own CPU is the same for both and is not reported).
#
#   bench/fuse_read_vs_vhdimount.sh [WORKDIR]   scratch files go to a fresh
#                                               folder inside WORKDIR
#                                               (default /var/tmp), removed
#                                               at exit; needs ~2.5 GiB free
# Needs /dev/fuse. Environment: VHDX (our binary, default build/bin/vhdx),
# CEILING (the ceiling server, default build/bin/fuse_ceiling; CEILING=none
# leaves it out), REPS (timed runs per case, default 5), SIZE (virtual size, default 2G),
# BLOCK_SIZE (of the image, default 32M; with 1M half the blocks are
# unallocated),
# COLD=0 skips the cold runs, TIMER=date times with `date +%s.%N` even when
# hyperfine is installed.
set -euo pipefail

VHDX=$(realpath -m "${VHDX:-$(dirname "$0")/../build/bin/vhdx}")
CEILING=${CEILING:-$(dirname "$0")/../build/bin/fuse_ceiling}
[ "$CEILING" = none ] || CEILING=$(realpath -m "$CEILING")
base_dir=$(realpath -m "${1:-${TMPDIR:-/var/tmp}}")
REPS=${REPS:-5}
SIZE=${SIZE:-2G}
BLOCK_SIZE=${BLOCK_SIZE:-32M}  # Hyper-V's default; WSL's ext4.vhdx uses 1M
COLD=${COLD:-1}

bench_name=fuse_read_vs_vhdimount
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_vhdx "does not run" --version
require_tools vhdimount fusermount pgrep mountpoint openssl shuf awk sha256sum /usr/bin/time
[ -c /dev/fuse ] || die "/dev/fuse is missing: no FUSE mounts here (in a container, pass --device /dev/fuse)"
{ [ -r /dev/fuse ] && [ -w /dev/fuse ]; } || die "/dev/fuse is not readable and writable by $(id -un): no FUSE mounts"
choose_timer
check_cold
[ "$CEILING" = none ] || [ -x "$CEILING" ] || die "$CEILING is missing: build it (ninja -C build fuse_ceiling) or set CEILING=none"
make_scratch "$base_dir" vhdx-fuse-bench

size=$(numfmt --from=iec "$SIZE")
mib=$((size >> 20))
((size % (1 << 20) == 0 && mib >= 64)) || die "SIZE must be a whole number of MiB, at least 64M"
mnt_v="$work/mnt-vhdx"
mnt_i="$work/mnt-vhdi"
mnt_n="$work/mnt-ceiling"
mkdir "$mnt_v" "$mnt_i" "$mnt_n"

# Unmounts whatever is still mounted; the scratch folder is removed only
# when nothing is mounted in it any more (rm -rf must not walk a mount).
cleanup() {
  if mountpoint -q "$mnt_v"; then "$VHDX" unmount "$mnt_v" || echo "$bench_name: cannot unmount $mnt_v" >&2; fi
  if mountpoint -q "$mnt_i"; then
    fusermount -u "$mnt_i" 2>/dev/null || umount "$mnt_i" || echo "$bench_name: cannot unmount $mnt_i" >&2
  fi
  if mountpoint -q "$mnt_n"; then fusermount -u "$mnt_n" 2>/dev/null || echo "$bench_name: cannot unmount $mnt_n" >&2; fi
  if mountpoint -q "$mnt_v" || mountpoint -q "$mnt_i" || mountpoint -q "$mnt_n"; then
    echo "$bench_name: $work left in place: still mounted" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# daemon_pid NAME MOUNTPOINT: the pid of the process named NAME whose last
# argument is MOUNTPOINT (how both daemons are started here); empty if none.
daemon_pid() {
  local pid
  for pid in $(pgrep -x "$1"); do
    if [ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | tail -1)" = "$2" ]; then
      echo "$pid"
      return
    fi
  done
}

versions_line() { echo "vhdx: $VHDX ($("$VHDX" --version)); $( (vhdimount -V 2>/dev/null || true) | head -1); $(uname -sr)"; }
versions_line
echo "timer: $timer; $REPS runs per case, alternating vhdx/vhdimount; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== building the image: $SIZE virtual, $BLOCK_SIZE blocks, half full"
image="$work/disk.vhdx"
make_half_full_image "$image" "$BLOCK_SIZE"
"$VHDX" info "$image" | sed -n 's/^\(block size\|blocks\|disk size\): /  \1: /p'

# vhdimount, with the readahead `vhdx mount` sets for itself when root
# (2 MiB instead of FUSE's 128 KiB), so that neither mount gets larger
# requests from the kernel than the other.
mount_i() {
  vhdimount "$image" "$mnt_i" >/dev/null || die "vhdimount failed"
  local dev
  # A first request waits for FUSE's INIT exchange, which resets readahead.
  ls "$mnt_i" >/dev/null
  dev=$(mountpoint -d "$mnt_i")
  if [ -w "/sys/class/bdi/$dev/read_ahead_kb" ]; then echo 2048 >"/sys/class/bdi/$dev/read_ahead_kb"; fi
  pid_i=$(daemon_pid vhdimount "$mnt_i")
}
# The ceiling server, with the same readahead.
mount_n() {
  [ "$CEILING" != none ] || return 0
  "$CEILING" "$size" "$mnt_n" || die "$CEILING failed"
  ls "$mnt_n" >/dev/null
  local dev
  dev=$(mountpoint -d "$mnt_n")
  if [ -w "/sys/class/bdi/$dev/read_ahead_kb" ]; then echo 2048 >"/sys/class/bdi/$dev/read_ahead_kb"; fi
  pid_n=$(daemon_pid fuse_ceiling "$mnt_n")
}

# How vhdx mount is started: read-only, which splices FULLY_PRESENT data
# from the image file to the kernel; the --no-splice row copies instead.
flags_v=(-r)
echo "== mounting (read-only)"
"$VHDX" mount "${flags_v[@]}" "$image" "$mnt_v" || die "vhdx mount failed"
mount_i
mount_n
file_v="$mnt_v/disk"
file_i="$mnt_i/vhdi1"
file_n="$mnt_n/disk"
for file in "$file_v" "$file_i" $([ "$CEILING" = none ] || echo "$file_n"); do
  [ -r "$file" ] || die "$file is missing"
  [ "$(stat -c %s "$file")" = "$size" ] || die "$file is $(stat -c %s "$file") bytes, not $size"
done
pid_v=$(daemon_pid vhdx "$mnt_v")
ls "$mnt_v" >/dev/null  # vhdx mount sets its readahead at the first request
echo "  readahead: vhdx mount $(cat "/sys/class/bdi/$(mountpoint -d "$mnt_v")/read_ahead_kb") KiB, vhdimount $(cat "/sys/class/bdi/$(mountpoint -d "$mnt_i")/read_ahead_kb") KiB"
echo "  vhdx mount pid ${pid_v:-not found}, vhdimount pid ${pid_i:-not found}"

echo "== checking that both mounts read the image's bytes"
want_sha=$("$VHDX" convert -O raw "$image" - | sha256sum | cut -d' ' -f1)
for file in "$file_v" "$file_i"; do
  got_sha=$(sha256sum <"$file" | cut -d' ' -f1)
  [ "$got_sha" = "$want_sha" ] || die "$file reads differently ($got_sha, vhdx convert gives $want_sha)"
done
echo "  sha256 $want_sha (vhdx convert, vhdx mount, vhdimount)"

# Fresh mounts (outside the timing): no cached page of the disk files.
remount_v() {
  "$VHDX" unmount "$mnt_v" || die "vhdx unmount failed"
  "$VHDX" mount "${flags_v[@]}" "$image" "$mnt_v" || die "vhdx mount failed"
  pid_v=$(daemon_pid vhdx "$mnt_v")
}
remount_i() {
  fusermount -u "$mnt_i" || die "fusermount -u $mnt_i failed"
  mount_i
}
remount_n() {
  fusermount -u "$mnt_n" || die "fusermount -u $mnt_n failed"
  mount_n
}

# timed_pair LABEL DD_BLOCK_SIZE FRESH: one untimed run per mount, then REPS
# alternating timed runs (the ceiling server's after each pair), each on a
# fresh mount when FRESH is 1; sets wall_v, wall_i, wall_n (median wall s)
# and cpu_v, cpu_i (median daemon CPU s).
timed_pair() {
  local label=$1 fresh=$3 runs_v=() runs_i=() runs_n=() i
  local cmd_v=(dd if="$file_v" of=/dev/null bs="$2") cmd_i=(dd if="$file_i" of=/dev/null bs="$2")
  local cmd_n=(dd if="$file_n" of=/dev/null bs="$2")
  run_v() { if [ "$fresh" = 1 ]; then remount_v; fi; timed_read "$pid_v" "${cmd_v[@]}"; }
  run_i() { if [ "$fresh" = 1 ]; then remount_i; fi; timed_read "$pid_i" "${cmd_i[@]}"; }
  run_n() { if [ "$fresh" = 1 ]; then remount_n; fi; timed_read "$pid_n" "${cmd_n[@]}"; }
  # The fresh runs remounted in subshells: find the daemons again.
  pid_v=$(daemon_pid vhdx "$mnt_v")
  pid_i=$(daemon_pid vhdimount "$mnt_i")
  pid_n=$(daemon_pid fuse_ceiling "$mnt_n")
  run_v >/dev/null
  run_i >/dev/null
  [ "$CEILING" = none ] || run_n >/dev/null
  for ((i = 0; i < REPS; i++)); do
    if ((i % 2 == 0)); then
      runs_v+=("$(run_v)")
      runs_i+=("$(run_i)")
    else
      runs_i+=("$(run_i)")
      runs_v+=("$(run_v)")
    fi
    [ "$CEILING" = none ] || runs_n+=("$(run_n)")
  done
  echo "  $label runs (wall s, daemon CPU s): vhdx      $(printf '[%s] ' "${runs_v[@]}")"
  echo "  $(printf '%*s' ${#label} '')                              vhdimount $(printf '[%s] ' "${runs_i[@]}")"
  wall_v=$(printf '%s\n' "${runs_v[@]}" | median 1)
  wall_i=$(printf '%s\n' "${runs_i[@]}" | median 1)
  wall_n=-
  if [ "$CEILING" != none ]; then
    echo "  $(printf '%*s' ${#label} '')                              ceiling   $(printf '[%s] ' "${runs_n[@]}")"
    wall_n=$(printf '%s\n' "${runs_n[@]}" | median 1)
  fi
  cpu_v=-
  cpu_i=-
  [ -z "$pid_v" ] || cpu_v=$(printf '%s\n' "${runs_v[@]}" | median 2)
  [ -z "$pid_i" ] || cpu_i=$(printf '%s\n' "${runs_i[@]}" | median 2)
}

mb_per_s() { awk -v s="$size" -v t="$1" 'BEGIN {if (t > 0) printf "%.0f", s / t / 1e6; else print "-"}'; }

table=()
# vhdx mount's throughput as a share of the ceiling's, in percent.
share() { if [ "$1" = - ]; then echo -; else awk -v n="$1" -v v="$2" 'BEGIN {printf "%.0f%%", 100 * n / v}'; fi; }
row() {  # LABEL: appends the last result
  local best=-
  [ "$wall_n" = - ] || best=$(ratio "$wall_i" "$wall_n" 2)
  table+=("$(printf '%-28s %8s %8s %9s %9s %10s   %8s %8s   %9s %9s %9s' "$1" "$wall_v" "$wall_i" "$(mb_per_s "$wall_v")" \
    "$(mb_per_s "$wall_i")" "$(ratio "$wall_i" "$wall_v" 2)" "$cpu_v" "$cpu_i" "$(mb_per_s "$wall_n")" \
    "$(share "$wall_n" "$wall_v")" "$best")")
}

echo "== timing (the image file's pages warm)"
for bs in 1M 128K 512; do
  timed_pair "first read, bs=$bs" "$bs" 1
  row "first read, bs=$bs"
done
# The same first read with every reply copied through the daemon, as
# before splicing: what the splice is worth on this kernel.
flags_v=(-r --no-splice)
timed_pair "first read, bs=1M, no splice" 1M 1
row "first read, 1M, --no-splice"
flags_v=(-r)
remount_v
timed_pair "re-read, bs=1M" 1M 0
row "re-read, bs=1M"
if [ "$COLD" = 1 ]; then
  echo "== one cold run each (page cache dropped before each)"
  remount_v
  ls "$mnt_v" >/dev/null  # the first request after mounting sets the readahead
  drop_caches
  cold_v=$(timed_read "$pid_v" dd if="$file_v" of=/dev/null bs=1M)
  remount_i
  drop_caches
  cold_i=$(timed_read "$pid_i" dd if="$file_i" of=/dev/null bs=1M)
  read -r wall_v cpu_v <<<"$cold_v"
  read -r wall_i cpu_i <<<"$cold_i"
  wall_n=-
  if [ "$CEILING" != none ]; then
    remount_n
    drop_caches
    read -r wall_n _ <<<"$(timed_read "$pid_n" dd if="$file_n" of=/dev/null bs=1M)"
  fi
  row "first read, bs=1M, cold"
fi

echo
echo "== results: median of $REPS runs (cold: one run); MB/s = 10^6 bytes of virtual disk per second;"
echo "   daemon CPU = user+system seconds of the mount's process during the run"
echo "   ceil MB/s = the ceiling server (reads nothing); vhdx/ceil = vhdx mount's MB/s as a share of it;"
echo "   vhdi/ceil = the largest vhdi/vhdx that any FUSE daemon could reach on this machine"
printf '%-28s %8s %8s %9s %9s %10s   %8s %8s   %9s %9s %9s\n' case "vhdx s" "vhdi s" "vhdx MB/s" "vhdi MB/s" "vhdi/vhdx" \
  "vhdx CPU" "vhdi CPU" "ceil MB/s" "vhdx/ceil" "vhdi/ceil"
printf '%s\n' "${table[@]}"
echo "goals (first reads): vhdi/vhdx >= 2 and vhdx/ceil >= 120% (splicing beats any daemon that copies its"
echo "      replies, which is what the ceiling server does); the --no-splice row shows what splicing is worth here."
echo "      The re-read row compares the kernel's page cache (vhdx mount keeps it) with a vhdimount round trip:"
echo "      shown, not judged."
