# Helpers shared by the bench/*.sh scripts; sourced, not run.
# The script sets bench_name (its name in error messages) and VHDX (our
# binary) before calling them; the helpers that time or measure runs need
# make_scratch first (they keep their files in $work), and time_once needs
# choose_timer.

die() { echo "$bench_name: $*" >&2; exit 1; }

# require_vhdx PROBLEM ARGS...: $VHDX exists and `$VHDX ARGS...` succeeds,
# else dies with "$VHDX PROBLEM".
require_vhdx() {
  local problem=$1
  shift
  [ -x "$VHDX" ] || die "$VHDX not found (run scripts/bootstrap, or set VHDX=path/to/vhdx)"
  "$VHDX" "$@" >/dev/null || die "$VHDX $problem"
}

require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is needed"
  done
}

# Sets timer: hyperfine when installed, unless TIMER=date.
choose_timer() {
  if [ "${TIMER:-}" != date ] && command -v hyperfine >/dev/null; then timer=hyperfine; else timer=date; fi
}

# With COLD=1, checks that the page cache can be dropped here; sets COLD=0
# with a note when it cannot.
check_cold() {
  if [ "$COLD" = 1 ] && ! { [ -w /proc/sys/vm/drop_caches ] && sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    COLD=0
    echo "note: cannot drop the page cache here (needs root); cold runs skipped"
  fi
}

# make_scratch BASE PREFIX: sets work to a fresh folder PREFIX.XXXXXX inside
# BASE, removed at exit.
make_scratch() {
  mkdir -p "$1"
  work=$(mktemp -d "$1/$2.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM
}

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

# ratio A B [DIGITS]: A / B with DIGITS decimals (default 3); "-" when either
# is "-" (not measured) or B is 0.
ratio() {
  awk -v a="$1" -v b="$2" -v d="${3:-3}" 'BEGIN {if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.*f", d, a / b}'
}

versions_line() { echo "vhdx: $VHDX ($("$VHDX" --version)); $(qemu-img --version | head -1)"; }

# compare_pair OURS_OUT QEMU_OUT: times the commands in the caller's arrays
# ours and qemu, which write OURS_OUT and QEMU_OUT: one untimed warm-up run
# each (source in the page cache), REPS warm runs alternating who goes
# first, one peak-RSS run each and, with COLD=1, one run each after dropping
# the page cache. Prints the warm runs; sets wall_o/wall_q (median wall s),
# min_o/min_q (fastest warm run), cpu_o/cpu_q (median CPU s), rss_o/rss_q
# (MiB) and cold_o/cold_q ("-" without cold runs).
compare_pair() {
  local ours_out=$1 qemu_out=$2 runs_ours=() runs_qemu=() i
  time_once "$ours_out" "${ours[@]}" >/dev/null
  time_once "$qemu_out" "${qemu[@]}" >/dev/null
  for ((i = 0; i < REPS; i++)); do
    if ((i % 2 == 0)); then
      runs_ours+=("$(time_once "$ours_out" "${ours[@]}")")
      runs_qemu+=("$(time_once "$qemu_out" "${qemu[@]}")")
    else
      runs_qemu+=("$(time_once "$qemu_out" "${qemu[@]}")")
      runs_ours+=("$(time_once "$ours_out" "${ours[@]}")")
    fi
  done
  echo "  warm runs (wall s, CPU s): vhdx $(printf '[%s] ' "${runs_ours[@]}")"
  echo "                             qemu-img $(printf '[%s] ' "${runs_qemu[@]}")"
  wall_o=$(printf '%s\n' "${runs_ours[@]}" | median 1)
  wall_q=$(printf '%s\n' "${runs_qemu[@]}" | median 1)
  min_o=$(printf '%s\n' "${runs_ours[@]}" | sort -g | head -1 | cut -d' ' -f1)
  min_q=$(printf '%s\n' "${runs_qemu[@]}" | sort -g | head -1 | cut -d' ' -f1)
  cpu_o=$(printf '%s\n' "${runs_ours[@]}" | median 2)
  cpu_q=$(printf '%s\n' "${runs_qemu[@]}" | median 2)
  rss_o=$(peak_rss_mib "$ours_out" "${ours[@]}")
  rss_q=$(peak_rss_mib "$qemu_out" "${qemu[@]}")
  cold_o=-
  cold_q=-
  if [ "$COLD" = 1 ]; then
    drop_caches
    cold_o=$(time_once "$ours_out" "${ours[@]}" | cut -d' ' -f1)
    drop_caches
    cold_q=$(time_once "$qemu_out" "${qemu[@]}" | cut -d' ' -f1)
  fi
}

print_results_legend() {
  echo "== results: median of $REPS warm runs; MB/s = 10^6 bytes of virtual disk per second;"
  echo "   best = fastest warm run; CPU = median user+system; cold = one run after dropping the page cache"
}

# make_half_full_image OUT BLOCK_SIZE: a dynamic VHDX of $size bytes ($mib
# MiB) holding $mib/2 pieces of 1 MiB of incompressible data at scattered
# 1 MiB slots (fixed seed), made by `vhdx convert -O vhdx` from a sparse raw
# disk in $work.
make_half_full_image() {
  local raw="$work/disk.raw" slots
  truncate -s "$size" "$raw"
  slots=$(seq 0 $((mib - 1)) | shuf -n $((mib / 2)) --random-source=<(random_stream 1) | sort -n)
  random_stream 2 | {
    for slot in $slots; do dd of="$raw" bs=1M seek="$slot" count=1 conv=notrunc iflag=fullblock status=none; done
  }
  "$VHDX" convert -O vhdx --block-size "$2" "$raw" "$1"
  rm -f "$raw"
}

# cpu_ticks PID: user + system clock ticks of the process, all its threads
# included (fields 14 and 15 of /proc/PID/stat, counted after the
# parenthesised command name, which could hold spaces); "-" when PID is
# empty or gone.
cpu_ticks() {
  if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; else echo -; fi
}

# timed_read PID CMD...: one timed run of CMD (time_once); prints "WALL CPU"
# in seconds, CPU being what process PID (a server or FUSE daemon) used
# meanwhile ("-" when unknown).
timed_read() {
  local pid=$1 before after wall
  shift
  before=$(cpu_ticks "$pid")
  wall=$(time_once "$work/none" "$@" | cut -d' ' -f1)
  after=$(cpu_ticks "$pid")
  awk -v w="$wall" -v a="$after" -v b="$before" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {if (a == "-" || b == "-") print w, "-"; else printf "%s %.2f\n", w, (a - b) / hz}'
}

# overwrite_tenth IMAGE SEED: about 10% of the disk ($size bytes) rewritten in partial
# blocks with `vhdx io`: writes of 4 KiB to 508 KiB (whole 512-byte sectors)
# at random 512-byte-aligned offsets, a different byte pattern each.
overwrite_tenth() {
  local image=$1 seed=$2 script
  mapfile -t script < <(awk -v size="$size" -v seed="$seed" 'BEGIN {
    srand(seed); target = size / 10; done = 0
    while (done < target) {
      len = (8 + int(rand() * 1009)) * 512
      off = int(rand() * ((size - len) / 512)) * 512
      printf "-c\nwrite -P %d %d %d\n", 1 + int(rand() * 255), off, len
      done += len
    }
  }')
  "$VHDX" io "${script[@]}" "$image" >/dev/null || die "vhdx io on $image failed"
  echo "  $(basename "$image"): $((${#script[@]} / 2)) writes"
}

# wall "$@": the wall seconds of one run of the command, after sync and a
# pause for the file system's journal to settle, so that no run pays for
# another's writeback.
wall() {
  sync
  sleep 0.5
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || die "failed: $*"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f\n", b - a}'
}
