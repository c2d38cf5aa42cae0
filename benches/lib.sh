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
