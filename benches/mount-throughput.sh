#!/usr/bin/env bash
# Streams a host's ISO through `isofs mount` with dd bs=4M and reports throughput and the daemon's
# peak RSS (VmHWM): the first read through RUNS fresh daemons (median), a second read (page cache),
# the ceiling FUSE allows here (benches/fuse_ceiling.rs), and with REF=some.iso that file's dd from
# the page cache for the ratio.
#
# usage: benches/mount-throughput.sh WORLD HOST
# env:   CACHE=DIR (block cache; default WORK/cache), LEVEL=19, WORK=/tmp/isofs-bench, RUNS=5,
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
RUNS=${RUNS:-5}
find_isofs

name=$(iso_name "$WORLD" "$HOST")
mnt=$WORK/mnt-throughput
inputs=(--flake "$WORLD/flake" --manifests "$WORLD/manifests" --store "$WORLD/store"
        --cache "$CACHE" --compression "zstd:$LEVEL" --hosts "$HOST")
trap 'umount_isofs "$mnt"' EXIT
# Fills the block cache if it is cold, so that the runs below measure serving, not compressing.
mount_isofs "$mnt" "$name" "${inputs[@]}"
umount_isofs "$mnt"
read -r first reread hwm < <(stream_mounted "$mnt" "$name" "$RUNS" "${inputs[@]}")
echo "fs.fuse.max_pages_limit $(fuse_max_pages); first reads (MiB/s): $(tr '\n' ' ' < "$WORK/first-reads")"
echo "isofs mount: first read $first MiB/s (median of $RUNS daemons), second read $reread MiB/s, daemon VmHWM $((hwm / 1024)) MiB"
ceiling=$(fuse_ceiling "$WORK/mnt-ceiling" 1024 "$RUNS")
echo "FUSE ceiling (isofs daemon, free bytes): $ceiling MiB/s; first read is $(ratio "$first" "$ceiling") of it"
if [ -n "${REF:-}" ]; then
    ref=$(page_cache_mibps "$REF" "$RUNS")
    echo "page cache: $REF $ref MiB/s; ratio first read $(ratio "$first" "$ref") (target >= 0.5), second read $(ratio "$reread" "$ref"), FUSE ceiling $(ratio "$ceiling" "$ref")"
fi
