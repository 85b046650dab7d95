#!/usr/bin/env bash
# Sequential read over NBD: nbdkit with our plugin against qemu-nbd, both
# serving the same image, read by nbdcopy:
#   image   2 GiB dynamic VHDX, 32 MiB blocks, half full: 1024 pieces of
#           1 MiB of incompressible data at scattered 1 MiB slots (fixed
#           seed), made by `vhdx convert -O vhdx --block-size 32M` (BLOCK_SIZE) from a
#           sparse raw disk. Every 32 MiB block holds some data, so every
#           block is allocated and the image has no holes to skip.
#   vhdx    nbdkit -r -U vhdx.sock PLUGIN file=IMAGE
#   qemu    qemu-nbd -r -f vhdx -e 8 -k qemu.sock --persistent --fork IMAGE
# Both servers run read-only on Unix sockets for the whole script, started
# outside the timing (our plugin checks the image at startup and opens it
# for serving at the first connection, before anything is timed). qemu-nbd
# gets -e 8: with its default
# (-e 1) it accepts one client at a time and does not advertise multi-conn;
# with more it does, as our plugin does, so nbdcopy opens its usual 4
# connections to both. Timed (page cache warm, one untimed run each first,
# then REPS runs alternating which server goes first):
#   nbdcopy               nbdcopy nbd+unix:///?socket=SOCK null:
#                         nbdcopy asks the server for block status and does
#                         not read what the server reports as zeros;
#   nbdcopy --no-extents  the same without block status: every byte is
#                         transferred, so this is pure read throughput.
# QEMU 7.2's vhdx driver reports no block status (all data), our plugin
# reports unallocated blocks as holes, so the first case favours us on
# images with holes; the script prints what each server reports. Before
# timing, `nbdcopy URI - | sha256sum` of each server must equal
# `vhdx convert -O raw IMAGE - | sha256sum`. The results are medians of
# wall-clock time, MB/s (10^6 bytes of virtual disk per second), the ratio
# qemu-nbd time / vhdx time (goal: >= 1, at least equal throughput) and the
# CPU time the server process used during the run (utime + stime of
# /proc/PID/stat, all threads; nbdcopy's own CPU is the same work for both
# servers and is not reported).
#
#   bench/nbd_read_vs_qemu_nbd.sh [WORKDIR]   scratch files go to a fresh
#                                             folder inside WORKDIR (default
#                                             /var/tmp), removed at exit;
#                                             needs ~2.5 GiB free
# Environment: VHDX (our binary, default build/bin/vhdx), PLUGIN (default
# build/lib/nbdkit-vhdx-plugin.so), REPS (timed runs per case, default 5),
# SIZE (virtual size, default 2G), BLOCK_SIZE (of the image, default 32M;
# with 1M half the blocks are unallocated and the plugin reports them as
# holes), TIMER=date times with `date +%s.%N` even
# when hyperfine is installed.
set -euo pipefail

VHDX=$(realpath -m "${VHDX:-$(dirname "$0")/../build/bin/vhdx}")
PLUGIN=$(realpath -m "${PLUGIN:-$(dirname "$0")/../build/lib/nbdkit-vhdx-plugin.so}")
base_dir=$(realpath -m "${1:-${TMPDIR:-/var/tmp}}")
REPS=${REPS:-5}
SIZE=${SIZE:-2G}
BLOCK_SIZE=${BLOCK_SIZE:-32M}  # with 1M, half the blocks are unallocated: holes in block status
QEMU_NBD_SHARED=8  # clients qemu-nbd accepts at once: > 1 turns on multi-conn

bench_name=nbd_read_vs_qemu_nbd
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_vhdx "does not run" --version
[ -f "$PLUGIN" ] || die "$PLUGIN not found (build the nbdkit-vhdx-plugin target, or set PLUGIN=path/to/nbdkit-vhdx-plugin.so)"
require_tools nbdkit qemu-nbd nbdcopy nbdinfo openssl shuf awk sha256sum /usr/bin/time
choose_timer
make_scratch "$base_dir" vhdx-nbd-bench

size=$(numfmt --from=iec "$SIZE")
mib=$((size >> 20))
((size % (1 << 20) == 0 && mib >= 64)) || die "SIZE must be a whole number of MiB, at least 64M"

# The servers are daemons, not our children: stopped by the pid they wrote,
# then waited for (nbdkit closes the image on its way out).
stop_servers() {
  local pidfile pid i
  for pidfile in "$work/vhdx.pid" "$work/qemu.pid"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
  done
}
trap 'stop_servers; rm -rf "$work"' EXIT

# holes_mib URI: MiB that the server's block status reports as hole or zero.
holes_mib() {
  nbdinfo --map "$1" | awk '$3 != 0 {n += $2} END {printf "%.0f", n / 1048576}'
}

versions_line() {
  echo "vhdx: $VHDX ($("$VHDX" --version)); plugin: $PLUGIN"
  echo "$(nbdkit --version | head -1); $(qemu-nbd --version | head -1); $(nbdcopy --version | head -1)"
}
versions_line
echo "timer: $timer; $REPS runs per case, alternating vhdx/qemu-nbd; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== building the image: $SIZE virtual, $BLOCK_SIZE blocks, half full"
image="$work/disk.vhdx"
make_half_full_image "$image" "$BLOCK_SIZE"
"$VHDX" info "$image" | sed -n 's/^\(block size\|blocks\|disk size\): /  \1: /p'

echo "== starting the servers (read-only, Unix sockets)"
nbdkit -r -U "$work/vhdx.sock" --pidfile "$work/vhdx.pid" "$PLUGIN" file="$image" ||
  die "nbdkit with $PLUGIN did not start"
qemu-nbd -r -f vhdx -e "$QEMU_NBD_SHARED" -k "$work/qemu.sock" --persistent --fork --pid-file "$work/qemu.pid" "$image" ||
  die "qemu-nbd did not start"
# nbdkit's parent returns before the server writes its pidfile.
for ((i = 0; i < 100; i++)); do
  [ -s "$work/vhdx.pid" ] && [ -s "$work/qemu.pid" ] && break
  sleep 0.1
done
vhdx_pid=$(cat "$work/vhdx.pid") || die "nbdkit wrote no pidfile"
qemu_pid=$(cat "$work/qemu.pid") || die "qemu-nbd wrote no pidfile"
vhdx_uri="nbd+unix:///?socket=$work/vhdx.sock"
qemu_uri="nbd+unix:///?socket=$work/qemu.sock"
echo "  nbdkit pid $vhdx_pid, qemu-nbd pid $qemu_pid"
for uri in "$vhdx_uri" "$qemu_uri"; do
  nbdinfo --can multi-conn "$uri" || echo "  note: $uri does not advertise multi-conn"
done

echo "== checking that both servers serve the image's bytes"
want_sha=$("$VHDX" convert -O raw "$image" - | sha256sum | cut -d' ' -f1)
for uri in "$vhdx_uri" "$qemu_uri"; do
  got_sha=$(nbdcopy "$uri" - | sha256sum | cut -d' ' -f1)
  [ "$got_sha" = "$want_sha" ] || die "$uri serves different bytes ($got_sha, vhdx convert gives $want_sha)"
done
echo "  sha256 $want_sha (vhdx convert, nbdkit, qemu-nbd)"
holes_vhdx=$(holes_mib "$vhdx_uri")
holes_qemu=$(holes_mib "$qemu_uri")
echo "  block status: nbdkit reports $holes_vhdx MiB of holes/zeros, qemu-nbd $holes_qemu MiB"
if [ "$holes_vhdx" != "$holes_qemu" ]; then
  echo "  note: nbdcopy skips reading what a server reports as zeros, so the default case favours the"
  echo "        server reporting more ($((holes_vhdx > holes_qemu ? holes_vhdx : holes_qemu)) MiB); --no-extents transfers every byte from both"
else
  echo "  (both report the same, so nbdcopy transfers the same bytes from both with or without block status)"
fi

# timed_pair LABEL NBDCOPY_OPTIONS...: one untimed run per server, then REPS
# alternating timed runs; sets wall_v, wall_q (median wall s) and cpu_v,
# cpu_q (median server CPU s).
timed_pair() {
  local label=$1 runs_v=() runs_q=() i
  shift
  local cmd_v=(nbdcopy "$@" "$vhdx_uri" null:) cmd_q=(nbdcopy "$@" "$qemu_uri" null:)
  timed_read "$vhdx_pid" "${cmd_v[@]}" >/dev/null
  timed_read "$qemu_pid" "${cmd_q[@]}" >/dev/null
  for ((i = 0; i < REPS; i++)); do
    if ((i % 2 == 0)); then
      runs_v+=("$(timed_read "$vhdx_pid" "${cmd_v[@]}")")
      runs_q+=("$(timed_read "$qemu_pid" "${cmd_q[@]}")")
    else
      runs_q+=("$(timed_read "$qemu_pid" "${cmd_q[@]}")")
      runs_v+=("$(timed_read "$vhdx_pid" "${cmd_v[@]}")")
    fi
  done
  echo "  $label runs (wall s, server CPU s): vhdx     $(printf '[%s] ' "${runs_v[@]}")"
  echo "  $(printf '%*s' ${#label} '')                              qemu-nbd $(printf '[%s] ' "${runs_q[@]}")"
  wall_v=$(printf '%s\n' "${runs_v[@]}" | median 1)
  wall_q=$(printf '%s\n' "${runs_q[@]}" | median 1)
  cpu_v=$(printf '%s\n' "${runs_v[@]}" | median 2)
  cpu_q=$(printf '%s\n' "${runs_q[@]}" | median 2)
}

mb_per_s() { awk -v s="$size" -v t="$1" 'BEGIN {if (t > 0) printf "%.0f", s / t / 1e6; else print "-"}'; }

table=()
row() {  # LABEL: appends the last timed_pair result
  table+=("$(printf '%-22s %8s %8s %9s %9s %10s   %8s %8s' "$1" "$wall_v" "$wall_q" "$(mb_per_s "$wall_v")" \
    "$(mb_per_s "$wall_q")" "$(ratio "$wall_q" "$wall_v")" "$cpu_v" "$cpu_q")")
}

echo "== timing (page cache warm)"
timed_pair "nbdcopy"
row "nbdcopy"
timed_pair "nbdcopy --no-extents" --no-extents
row "nbdcopy --no-extents"

echo
echo "== results: median of $REPS warm runs; MB/s = 10^6 bytes of virtual disk per second;"
echo "   server CPU = user+system seconds of the server process during the run"
printf '%-22s %8s %8s %9s %9s %10s   %8s %8s\n' case "vhdx s" "qemu s" "vhdx MB/s" "qemu MB/s" "qemu/vhdx" \
  "vhdx CPU" "qemu CPU"
printf '%s\n' "${table[@]}"
echo "goal: qemu/vhdx >= 1 (nbdkit with the plugin at least as fast as qemu-nbd)"
