#!/usr/bin/env bash
# vhdx resize against the only Linux route qemu-img offers for VHDX (qemu-img
# resize refuses the format): convert to raw, truncate, convert back.
#
#   bench/resize.sh [WORKDIR]     about 4 minutes; needs about 2 GiB free
#
# The image: SIZE (default 1 GiB) with 1 MiB blocks holding half its size of
# incompressible data at scattered 1 MiB slots. Grown to BIG (default 2 TiB:
# the BAT outgrows its 1 MiB region and moves) and shrunk back to SIZE, REPS
# (default 3) times each way. Prints the median wall time of each, the ratio
# ours/route, and the bytes each side wrote (strace: every pwrite/write to
# any file), and checks that all four results read alike (qemu-img compare)
# and pass qemu-img check.
set -euo pipefail
bench_name=resize.sh
cd "$(dirname "$0")/.."
. bench/lib.sh
VHDX=${VHDX:-$PWD/build/bin/vhdx}
SIZE=${SIZE:-1G}
BIG=${BIG:-2T}
REPS=${REPS:-3}
require_vhdx "--version fails" --version
require_tools qemu-img strace shuf openssl
make_scratch "${1:-${TMPDIR:-/tmp}}" vhdx-resize-bench
size=$(numfmt --from=iec "$SIZE")
mib=$((size >> 20))

echo "$(versions_line)"
echo "image: $SIZE, 1 MiB blocks, $((mib / 2)) MiB of data; grown to $BIG and shrunk back, $REPS runs each"
make_half_full_image "$work/base.vhdx" 1M

# route FROM TO SIZE: qemu-img's way to a VHDX of another size.
route() {
  qemu-img convert -f vhdx -O raw "$1" "$work/route.raw" &&
    truncate -s "$3" "$work/route.raw" &&
    qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$work/route.raw" "$2" &&
    rm -f "$work/route.raw"
}

# written_bytes "$@": bytes the command (and its children) wrote to files.
written_bytes() {
  strace -f -qq -o "$work/trace" -e trace=pwrite64,pwritev,pwritev2,write,writev "$@" >/dev/null 2>&1 ||
    die "failed under strace: $*"
  awk '/= [0-9]+$/ && !/^[0-9]+ +write\([12],/ {n += $NF} END {printf "%d\n", n}' "$work/trace"
}

grow_ours=() grow_route=() shrink_ours=() shrink_route=()
for ((i = 0; i < REPS; i++)); do
  cp --sparse=always "$work/base.vhdx" "$work/ours.vhdx"
  grow_ours+=("$(wall "$VHDX" resize "$work/ours.vhdx" "$BIG")")
  shrink_ours+=("$(wall "$VHDX" resize --shrink "$work/ours.vhdx" "$SIZE")")
  grow_route+=("$(wall route "$work/base.vhdx" "$work/big.vhdx" "$BIG")")
  shrink_route+=("$(wall route "$work/big.vhdx" "$work/small.vhdx" "$SIZE")")
done
med() { printf '%s\n' "$@" | awk '{print $1, $1}' | median 1; }

# The results: ours grown and shrunk again equal the route's, and the base.
cp --sparse=always "$work/base.vhdx" "$work/ours.vhdx"
bat=$("$VHDX" resize --output=json "$work/ours.vhdx" "$BIG" | awk -F'[:,]' '/"bat-offset"/ {print $2 + 0}')
qemu-img compare -q -f vhdx -F vhdx "$work/ours.vhdx" "$work/big.vhdx" || die "grown images differ"
qemu-img check -q -f vhdx "$work/ours.vhdx" || die "qemu-img check fails on our grown image"
"$VHDX" resize --shrink "$work/ours.vhdx" "$SIZE" >/dev/null
qemu-img compare -q -f vhdx -F vhdx "$work/ours.vhdx" "$work/small.vhdx" || die "shrunk images differ"
qemu-img compare -q -f vhdx -F vhdx "$work/ours.vhdx" "$work/base.vhdx" || die "grown then shrunk differs from the base"
qemu-img check -q -f vhdx "$work/ours.vhdx" || die "qemu-img check fails on our shrunk image"

cp --sparse=always "$work/base.vhdx" "$work/ours.vhdx"
w_grow_ours=$(written_bytes "$VHDX" resize "$work/ours.vhdx" "$BIG")
w_shrink_ours=$(written_bytes "$VHDX" resize --shrink "$work/ours.vhdx" "$SIZE")
w_grow_route=$(written_bytes bash -c "$(declare -f route); work='$work'; route '$work/base.vhdx' '$work/big.vhdx' $BIG")
w_shrink_route=$(written_bytes bash -c "$(declare -f route); work='$work'; route '$work/big.vhdx' '$work/small.vhdx' $SIZE")

g_o=$(med "${grow_ours[@]}") g_r=$(med "${grow_route[@]}")
s_o=$(med "${shrink_ours[@]}") s_r=$(med "${shrink_route[@]}")
echo
printf '%-22s %12s %12s %10s %16s %16s\n' case "vhdx s" "route s" ratio "vhdx wrote" "route wrote"
printf '%-22s %12s %12s %10s %16s %16s\n' "grow $SIZE->$BIG" "$g_o" "$g_r" "$(ratio "$g_o" "$g_r" 4)" \
  "$w_grow_ours" "$w_grow_route"
printf '%-22s %12s %12s %10s %16s %16s\n' "shrink $BIG->$SIZE" "$s_o" "$s_r" "$(ratio "$s_o" "$s_r" 4)" \
  "$w_shrink_ours" "$w_shrink_route"
echo "(bytes: every pwrite/write to a file; the grown image's BAT moved to offset $bat)"
echo "goal: ratio < 0.01, and vhdx's bytes proportional to the BAT, not to the $((mib / 2)) MiB of data"
