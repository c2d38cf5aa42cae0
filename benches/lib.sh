# shellcheck shell=bash
# Helpers shared by benches/compare.sh and benches/mount-throughput.sh (sourced, not run).

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.3f", a/b; else print "n/a" }'; }
mib() { awk -v a="$1" 'BEGIN{printf "%.1f", a/1048576}'; }
# ok VALUE OP LIMIT -> "yes" / "NO"
ok() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN{ r = (op == "<=") ? v <= l : v >= l; print r ? "yes" : "NO" }'; }

# MiB/s of reading FILE with dd bs=4M, timed by dd itself (a page-cached ISO takes a few hundredths
# of a second: process start-up would swamp it); prints "seconds mibps".
dd_read() {
    dd if="$1" of=/dev/null bs=4M 2>&1 | awk '/copied/ {
        for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i - 1)
        printf "%.4f %.1f\n", s, $1 / 1048576 / s }'
}

# Starts `isofs mount MNT --foreground ARGS…` in the background; sets MOUNT_PID. Waits until FILE
# (relative to MNT) is readable.
mount_isofs() {
    local mnt=$1 file=$2 i
    shift 2
    mkdir -p "$mnt"
    "$ISOFS" mount "$mnt" --foreground "$@" 2> "$mnt.log" &
    MOUNT_PID=$!
    for ((i = 0; i < 6000; i++)); do
        if mountpoint -q "$mnt" && [ -e "$mnt/$file" ]; then return 0; fi
        kill -0 "$MOUNT_PID" 2>/dev/null || { cat "$mnt.log" >&2; echo "isofs mount exited" >&2; return 1; }
        sleep 0.1
    done
    echo "mount $mnt not ready after 600 s" >&2
    return 1
}

umount_isofs() {
    "$ISOFS" umount "$1" 2>/dev/null || fusermount3 -u "$1" 2>/dev/null || umount "$1" 2>/dev/null || true
    wait "$MOUNT_PID" 2>/dev/null || true
}

vmhwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

iso_name() { # WORLD HOST -> the ISO's file name, as conventional.sh and isofs name it
    local m=$1/manifests/$2.json
    printf 'nixos-%s-%s-%s.iso' "$2" "$(jq -r .release "$m")" "$(jq -r .system "$m")"
}

find_isofs() {
    if [ -z "${ISOFS:-}" ]; then
        (cd "$REPO" && cargo build --release --quiet)
        ISOFS=$REPO/target/release/isofs
    fi
    [ -x "$ISOFS" ] || { echo "no isofs binary at $ISOFS" >&2; exit 1; }
}

# Median of the numbers on stdin, one per line.
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Streams FILE (relative to MNT) with dd bs=4M through RUNS fresh `isofs mount MNT ARGS…` daemons
# (warm block cache, cold page cache) and reads it once more from the last one (the kernel's page
# cache then answers). Prints "first_mibps_median reread_mibps peak_vmhwm_kib"; each first read
# goes to $WORK/first-reads.
stream_mounted() {
    local mnt=$1 file=$2 runs=$3 i mibps hwm=0 h reread
    shift 3
    : > "$WORK/first-reads"
    for ((i = 0; i < runs; i++)); do
        mount_isofs "$mnt" "$file" "$@"
        read -r _ mibps < <(dd_read "$mnt/$file")
        echo "$mibps" >> "$WORK/first-reads"
        h=$(vmhwm_kib "$MOUNT_PID")
        ((h > hwm)) && hwm=$h
        if ((i == runs - 1)); then read -r _ reread < <(dd_read "$mnt/$file"); fi
        umount_isofs "$mnt"
    done
    printf '%s %s %s\n' "$(median < "$WORK/first-reads")" "$reread" "$hwm"
}

# Median MiB/s of RUNS dd bs=4M reads of a SIZE_MIB file served by benches/fuse_ceiling.rs (the
# isofs daemon with bytes that cost nothing), dropping its page cache between reads.
fuse_ceiling() {
    local mnt=$1 size=$2 runs=$3 bin pid i
    bin=$(cd "$REPO" && cargo bench --quiet --bench fuse_ceiling --no-run --message-format=json 2>/dev/null |
        jq -r 'select(.target.name == "fuse_ceiling" and .executable != null) | .executable')
    mkdir -p "$mnt"
    "$bin" "$mnt" "$size" 2> "$mnt.log" &
    pid=$!
    for ((i = 0; i < 600; i++)); do [ -e "$mnt/free.bin" ] && break; sleep 0.1; done
    for ((i = 0; i < runs; i++)); do
        dd if="$mnt/free.bin" iflag=nocache count=0 status=none
        dd_read "$mnt/free.bin" | cut -d' ' -f2
    done | median
    fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"
    wait "$pid" 2>/dev/null || true
}

# Median MiB/s of RUNS dd bs=4M reads of FILE from the page cache (read once first to fill it).
page_cache_mibps() {
    local i
    cat "$1" > /dev/null
    for ((i = 0; i < $2; i++)); do dd_read "$1" | cut -d' ' -f2; done | median
}

# The kernel's cap on a FUSE request, in 4 KiB pages (256 = 1 MiB unless raised).
fuse_max_pages() { cat /proc/sys/fs/fuse/max_pages_limit 2>/dev/null || echo 256; }
