#!/usr/bin/env bash
# Streams a host's ISO through `isofs mount` with dd bs=4M and reports throughput and the daemon's
# peak RSS (VmHWM); with REF=some.iso also dd's that file from the page cache for a ratio.
#
# usage: benches/mount-throughput.sh WORLD HOST
# env:   CACHE=DIR (block cache; default WORK/cache), LEVEL=19, WORK=/tmp/isofs-bench,
#        ISOFS=path (default: cargo build --release), REF=ISO to compare with
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 WORLD HOST" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=benches/lib.sh
. "$HERE/lib.sh"
WORLD=$(cd "$1" && pwd)
HOST=$2
LEVEL=${LEVEL:-19}
WORK=${WORK:-/tmp/isofs-bench}
CACHE=${CACHE:-$WORK/cache}
find_isofs

name=$(iso_name "$WORLD" "$HOST")
mnt=$WORK/mnt-throughput
inputs=(--flake "$WORLD/flake" --manifests "$WORLD/manifests" --store "$WORLD/store"
        --cache "$CACHE" --compression "zstd:$LEVEL" --hosts "$HOST")
t0=$(now)
mount_isofs "$mnt" "$name" "${inputs[@]}"
echo "mount ready (planned) in $(since "$t0") s"
trap 'umount_isofs "$mnt"' EXIT
read -r s mibps < <(dd_read "$mnt/$name")
hwm=$(vmhwm_kib "$MOUNT_PID")
echo "isofs mount: $(mib "$(stat -c %s "$mnt/$name")") MiB in $s s = $mibps MiB/s, daemon VmHWM $((hwm / 1024)) MiB"
if [ -n "${REF:-}" ]; then
    cat "$REF" > /dev/null
    read -r rs rmibps < <(dd_read "$REF")
    echo "page cache:  $REF in $rs s = $rmibps MiB/s; ratio $(ratio "$mibps" "$rmibps") (target >= 0.5)"
fi
