#!/usr/bin/env bash
# The nbdkit filter over HTTP (nbdkit's curl plugin, lighttpd on 127.0.0.1)
# against what users do without it.
#
#   bench/remote_read.sh [WORKDIR]     about 5 minutes; needs about 3 x SIZE/2 free
#
# The image: SIZE (default 16 GiB) with 1 MiB blocks, half of them holding
# incompressible data at scattered slots. Two measures, REPS (default 3)
# runs each, medians:
#   1. 1 GiB read from the middle of the disk (qemu-io over NBD) through
#      `nbdkit --filter=vhdx curl URL`, against downloading the whole file
#      with curl and reading the same 1 GiB locally with `vhdx io`: time and
#      bytes fetched (the filter's requests to curl, counted by nbdkit's log
#      filter; curl's download size). Goal: at most 0.6x the bytes and 0.5x
#      the time.
#   2. The whole disk read sequentially (nbdcopy --no-extents to /dev/null)
#      through the filter, against plain `nbdkit curl` serving a raw file of
#      the same content. Goal: at least 0.8x its speed.
set -euo pipefail
bench_name=remote_read.sh
cd "$(dirname "$0")/.."
. bench/lib.sh
VHDX=${VHDX:-$PWD/build/bin/vhdx}
FILTER=${FILTER:-$PWD/build/lib/nbdkit-vhdx-filter.so}
SIZE=${SIZE:-16G}
REPS=${REPS:-3}
require_vhdx "--version fails" --version
require_tools nbdkit nbdcopy qemu-io curl lighttpd openssl shuf
[ -f "$FILTER" ] || die "$FILTER not found (build with nbdkit-plugin-dev installed)"
nbdkit curl --version >/dev/null 2>&1 || die "nbdkit's curl plugin is needed"
make_scratch "${1:-${TMPDIR:-/tmp}}" vhdx-remote-bench
size=$(numfmt --from=iec "$SIZE")
mib=$((size >> 20))
middle=$(((mib / 2 - 512) << 20))

echo "vhdx: $VHDX ($("$VHDX" --version)); $(nbdkit --version); $(lighttpd -v 2>&1 | head -1)"
echo "image: $SIZE, 1 MiB blocks, $((mib / 2)) MiB of data; $REPS runs of each"
mkdir -p "$work/www"
make_half_full_image "$work/www/image.vhdx" 1M
"$VHDX" convert -O raw "$work/www/image.vhdx" "$work/www/disk.raw"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/lighttpd.conf" <<EOF
server.document-root = "$work/www"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$work/error.log"
mimetype.assign = ("" => "application/octet-stream")
EOF
lighttpd -D -f "$work/lighttpd.conf" &
web=$!
trap 'kill $web 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 200); do curl -sfI "http://127.0.0.1:$port/image.vhdx" >/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$port

# measure CMD...: prints "SECONDS BYTES" for one run: its wall time, and the
# bytes it fetched over HTTP, which the run writes to $work/bytes.
measure() {
  local t0 t1
  rm -f "$work/bytes"
  sync
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || die "failed: $*"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v n="$(cat "$work/bytes")" 'BEGIN {printf "%.3f %d\n", b - a, n}'
}
# fetched LOG: bytes the reads in nbdkit's log filter LOG asked of curl.
fetched() {
  local n=0 h
  for h in $(grep -o ' Read id=[0-9]* offset=0x[0-9a-f]* count=0x[0-9a-f]*' "$1" | sed 's/.*count=//'); do n=$((n + h)); done
  echo "$n"
}

filter_read() {
  rm -f "$work/filter.log"
  nbdkit -r -U - --filter="$FILTER" --filter=log curl "$url/image.vhdx" logfile="$work/filter.log" \
    --run "qemu-io -r -f raw \"\$uri\" -c 'read $middle 1G'" && fetched "$work/filter.log" >"$work/bytes"
}
download_read() {
  curl -sf -w '%{size_download}' -o "$work/local.vhdx" "$url/image.vhdx" >"$work/bytes" &&
    "$VHDX" io -r -c "read $middle 1G" "$work/local.vhdx" && rm -f "$work/local.vhdx"
}
filter_copy() {
  nbdkit -r -U - --filter="$FILTER" curl "$url/image.vhdx" --run 'nbdcopy --no-extents "$uri" null:' && echo 0 >"$work/bytes"
}
raw_copy() { nbdkit -r -U - curl "$url/disk.raw" --run 'nbdcopy --no-extents "$uri" null:' && echo 0 >"$work/bytes"; }

# The filter reads what a download reads locally.
a=$(nbdkit -r -U - --filter="$FILTER" curl "$url/image.vhdx" --run "qemu-io -r -f raw \"\$uri\" -c 'read -v $middle 4096'" | grep '^[0-9a-f]*:' | md5sum)
b=$("$VHDX" io -r -c "read -v $middle 4096" "$work/www/image.vhdx" | grep '^[0-9a-f]*:' | md5sum)
[ "$a" = "$b" ] || die "the filter and the local image read differently at $middle"

fr=() dr=() fc=() rc=()
for ((i = 0; i < REPS; i++)); do
  fr+=("$(measure filter_read)")
  dr+=("$(measure download_read)")
  fc+=("$(measure filter_copy)")
  rc+=("$(measure raw_copy)")
done
col() {
  local c=$1
  shift
  printf '%s\n' "$@" | median "$c"
}
fr_t=$(col 1 "${fr[@]}") fr_b=$(col 2 "${fr[@]}") dr_t=$(col 1 "${dr[@]}") dr_b=$(col 2 "${dr[@]}")
fc_t=$(col 1 "${fc[@]}") rc_t=$(col 1 "${rc[@]}")
echo
echo "1 GiB from the middle         seconds   bytes fetched over HTTP"
printf '  filter over curl        %9.3f   %14d\n' "$fr_t" "$fr_b"
printf '  download, read locally  %9.3f   %14d\n' "$dr_t" "$dr_b"
echo "  ratio (goal <= 0.5 time, <= 0.6 bytes): time $(ratio "$fr_t" "$dr_t"), bytes $(ratio "$fr_b" "$dr_b")"
echo
echo "whole disk, sequential        seconds   MiB/s"
printf '  filter over curl        %9.3f   %8.0f\n' "$fc_t" "$(awk -v t="$fc_t" -v m="$mib" 'BEGIN {print m / t}')"
printf '  nbdkit curl of raw      %9.3f   %8.0f\n' "$rc_t" "$(awk -v t="$rc_t" -v m="$mib" 'BEGIN {print m / t}')"
echo "  speed ratio filter/raw (goal >= 0.8): $(ratio "$rc_t" "$fc_t")"
