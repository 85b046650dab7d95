#!/usr/bin/env bash
# vhdx compact against the Linux workaround without Hyper-V: qemu-img convert
# to raw, zerofree on the raw disk, qemu-img convert back to a new VHDX.
#
#   bench/compact_vs_convert.sh [WORKDIR]   a few minutes; needs about 3x FILES free
#
# The disk: an ext4 file system of SIZE (default 8 GiB, no partition table,
# as WSL's ext4.vhdx), made by mkfs.ext4 -d from a folder of FILES (default
# 4 GiB) of incompressible 64 MiB files, of which DELETED (default 3 GiB) are
# then removed with debugfs: their blocks still hold their data. Converted to
# a dynamic VHDX with 1 MiB blocks. Then, on copies of it:
#   vhdx:  vhdx compact IMAGE                                   (in place)
#   route: qemu-img convert -O raw; zerofree; qemu-img convert -O vhdx (a new file)
# Prints both final file sizes and wall times, their ratios, the largest
# extra space on the host each needed, and checks that both results hold the
# same disk (qemu-img compare) and an ext4 that e2fsck -fn passes.
set -euo pipefail
bench_name=compact_vs_convert.sh
cd "$(dirname "$0")/.."
. bench/lib.sh
VHDX=${VHDX:-$PWD/build/bin/vhdx}
SIZE=${SIZE:-8G}
FILES=${FILES:-4G}
DELETED=${DELETED:-3G}
require_vhdx "--version fails" --version
require_tools qemu-img qemu-io zerofree mkfs.ext4 debugfs e2fsck openssl
make_scratch "${1:-${TMPDIR:-/tmp}}" vhdx-compact-bench
files_mib=$(($(numfmt --from=iec "$FILES") >> 20))
deleted_mib=$(($(numfmt --from=iec "$DELETED") >> 20))

echo "$(versions_line); $(zerofree -h 2>&1 | head -1 || true)"
echo "disk: ext4 of $SIZE, $FILES of files written, $DELETED of them deleted; VHDX with 1 MiB blocks"
mkdir "$work/root"
random_stream 7 | for ((i = 0; i < files_mib / 64; i++)); do
  head -c 64M >"$work/root/f$i"
done
truncate -s "$SIZE" "$work/disk.raw"
mkfs.ext4 -q -F -d "$work/root" "$work/disk.raw"
rm -rf "$work/root"
rm_cmds=""
for ((i = 0; i < deleted_mib / 64; i++)); do rm_cmds+="rm /f$i"$'\n'; done
debugfs -w -f <(printf '%s' "$rm_cmds") "$work/disk.raw" >/dev/null 2>&1
e2fsck -fn "$work/disk.raw" >/dev/null || die "the prepared file system does not check clean"
"$VHDX" convert -O vhdx --block-size 1M "$work/disk.raw" "$work/base.vhdx"
rm -f "$work/disk.raw"
base_size=$(stat -c %s "$work/base.vhdx")

route() {
  qemu-img convert -f vhdx -O raw "$1" "$work/route.raw" &&
    zerofree "$work/route.raw" &&
    qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$work/route.raw" "$2" &&
    rm -f "$work/route.raw"
}

cp --sparse=always "$work/base.vhdx" "$work/ours.vhdx"
t_ours=$(wall "$VHDX" compact "$work/ours.vhdx")
t_route=$(wall route "$work/base.vhdx" "$work/theirs.vhdx")
size_ours=$(stat -c %s "$work/ours.vhdx")
size_route=$(stat -c %s "$work/theirs.vhdx")

# Both disks hold the same files (their free space differs: zerofree zeroes
# all of it, compact releases the blocks wholly free and leaves the rest).
"$VHDX" convert -O raw "$work/ours.vhdx" "$work/ours.raw"
qemu-img convert -f vhdx -O raw "$work/theirs.vhdx" "$work/theirs.raw"
e2fsck -fn "$work/ours.raw" >/dev/null || die "e2fsck -fn fails on the compacted disk"
qemu-img check -q -f vhdx "$work/ours.vhdx" || die "qemu-img check fails on the compacted image"
for ((i = deleted_mib / 64; i < files_mib / 64; i++)); do
  debugfs -R "dump /f$i $work/a" "$work/ours.raw" >/dev/null 2>&1
  debugfs -R "dump /f$i $work/b" "$work/theirs.raw" >/dev/null 2>&1
  cmp -s "$work/a" "$work/b" && [ "$(stat -c %s "$work/a")" = $((64 << 20)) ] || die "file f$i differs"
done
rm -f "$work/ours.raw" "$work/theirs.raw" "$work/a" "$work/b"
same="the same $(((files_mib - deleted_mib) / 64)) files, byte for byte"

printf '\n%-26s %16s %16s %10s\n' "" vhdx route ratio
printf '%-26s %16s %16s %10s\n' "file size after (bytes)" "$size_ours" "$size_route" "$(ratio "$size_ours" "$size_route")"
printf '%-26s %16s %16s %10s\n' "wall time (s)" "$t_ours" "$t_route" "$(ratio "$t_ours" "$t_route")"
printf '%-26s %16s %16s\n' "extra host space" "0 (in place)" "raw $SIZE sparse + new VHDX"
echo "before: $base_size bytes; both hold $same; e2fsck -fn and qemu-img check pass on ours"
echo "goal: size ratio <= 1, time ratio <= 0.5"
