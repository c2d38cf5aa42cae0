#!/usr/bin/env bash
# isofs against the conventional pipeline (benches/conventional.sh: mksquashfs + xorriso + sha256sum,
# nixpkgs' flags) on one world, same inputs, same zstd level, all cores, in one run.
#
#   (a)  conventional build of host 1 (and of host 2, for (h))
#   (b)  isofs build, empty cache (also at zstd:3 and none, each with its own empty cache)
#   (c)  isofs build again, warm cache
#   (d)  isofs build of host 2 (sharing the store), after host 1
#   (e)  dd bs=4M of the ISO through `isofs mount` (fresh daemon, warm cache; median of RUNS) vs dd of
#        (a)'s ISO from the page cache; also a second read (page cache of the mount) and the ceiling
#        FUSE allows here (benches/fuse_ceiling.rs: the daemon serving bytes that cost nothing)
#   (f)  first read of the mounted .sha256 (fresh daemon) vs `openssl dgst -sha256` of (a)'s ISO
#   (g)  the daemon's peak RSS (VmHWM) while streaming the whole ISO
#   (h)  block cache bytes on disk for both hosts vs the two conventional ISOs
# Also checks that the mounted ISO, the built ISO and the mounted sidecar agree.
#
# usage: benches/compare.sh
# env:   LEVEL=19  SIZE=1100 (MiB of extra store, see make-big-world.sh)  QUICK=1 (LEVEL=3 SIZE=150)
#        WORK=/tmp/isofs-bench (world, outputs, caches; -quick with QUICK)  ISOFS=path (default: cargo build --release)
#        JOBS=$(nproc)  HOST1=shinji HOST2=kenpachi  RUNS=5 (reads per throughput figure)
#        REPEAT=1 (alternating (a)/(b) pairs; the medians are compared)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=benches/lib.sh
. "$HERE/lib.sh"
if [ -n "${QUICK:-}" ]; then
    LEVEL=${LEVEL:-3}
    SIZE=${SIZE:-150}
    WORK=${WORK:-/tmp/isofs-bench-quick}
fi
LEVEL=${LEVEL:-19}
SIZE=${SIZE:-1100}
WORK=${WORK:-/tmp/isofs-bench}
JOBS=${JOBS:-$(nproc)}
RUNS=${RUNS:-5}
REPEAT=${REPEAT:-1}
HOST1=${HOST1:-shinji}
HOST2=${HOST2:-kenpachi}
export LEVEL JOBS
WORLD=$WORK/world
CACHE=$WORK/cache
mkdir -p "$WORK"

SIZE=$SIZE "$HERE/make-big-world.sh" "$WORLD"
find_isofs
name1=$(iso_name "$WORLD" "$HOST1")
name2=$(iso_name "$WORLD" "$HOST2")
inputs() { # CACHE COMPRESSION
    printf '%s\n' --flake "$WORLD/flake" --manifests "$WORLD/manifests" --store "$WORLD/store" \
        --cache "$1" --compression "$2"
}
mapfile -t IN < <(inputs "$CACHE" "zstd:$LEVEL")

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); printf '%-4s %-58s %12s  ratio %-7s target %-8s %s\n' "$@"; }

# Both pipelines read the store from the page cache.
find "$WORLD/store" -type f -exec cat {} + > /dev/null
echo "world: $(du -sh "$WORLD/store" | cut -f1) store, level $LEVEL, $JOBS jobs, isofs $ISOFS"

build() { # HOST OUT CACHE COMPRESSION -> seconds; peak RSS (KiB) in $WORK/rss
    local t0
    rm -rf "$2"
    t0=$(now)
    mapfile -t args < <(inputs "$3" "$4")
    /usr/bin/time -f %M -o "$WORK/rss" "$ISOFS" build "$1" --out "$2" "${args[@]}" > /dev/null 2>> "$WORK/build.log"
    since "$t0"
}
: > "$WORK/build.log"

# ---------------------------------------------------------------- (a), (b) cold builds, interleaved
# This machine's speed drifts by several per cent over minutes, as much as the margin being
# measured, so (a) and (b) alternate REPEAT times and the medians are compared.
rm -rf "$WORK/conv"
conv1=$WORK/conv/$name1 conv2=$WORK/conv/$name2
: > "$WORK/a-times"; : > "$WORK/b-times"
for ((r = 0; r < REPEAT; r++)); do
    rm -rf "$WORK/conv/$name1"
    t0=$(now); "$HERE/conventional.sh" "$WORLD" "$HOST1" "$WORK/conv" > "$WORK/conv1.log"; echo "$(since "$t0")" >> "$WORK/a-times"
    rm -rf "$CACHE"
    echo "$(build "$HOST1" "$WORK/b" "$CACHE" "zstd:$LEVEL")" >> "$WORK/b-times"
done
ta=$(median < "$WORK/a-times") tb=$(median < "$WORK/b-times")
t0=$(now); "$HERE/conventional.sh" "$WORLD" "$HOST2" "$WORK/conv" > "$WORK/conv2.log"; ta2=$(since "$t0")
row "(a)" "conventional build, $HOST1 ($(mib "$(stat -c %s "$conv1")") MiB ISO; runs: $(paste -sd' ' "$WORK/a-times"))" "$ta s" 1 "" ""
row "(a2)" "conventional build, $HOST2" "$ta2 s" "$(ratio "$ta2" "$ta")" "" ""
row "(b)" "isofs build, empty cache, zstd:$LEVEL (peak RSS $(($(cat "$WORK/rss") / 1024)) MiB; runs: $(paste -sd' ' "$WORK/b-times"))" "$tb s" "$(ratio "$tb" "$ta")" "<= 0.9" "$(ok "$(ratio "$tb" "$ta")" "<=" 0.9)"
for c in zstd:3 none; do
    [ "$c" = "zstd:$LEVEL" ] && continue
    rm -rf "$WORK/cache-$c"
    t=$(build "$HOST1" "$WORK/b-$c" "$WORK/cache-$c" "$c")
    row "(b)" "isofs build, empty cache, $c ($(mib "$(stat -c %s "$WORK/b-$c/iso/$name1")") MiB ISO)" "$t s" "$(ratio "$t" "$ta")" "" ""
    rm -rf "$WORK/cache-$c" "$WORK/b-$c"
done
tc=$(build "$HOST1" "$WORK/c" "$CACHE" "zstd:$LEVEL")
row "(c)" "isofs build, warm cache ($(mib "$(stat -c %s "$WORK/c/iso/$name1")") MiB ISO)" "$tc s" "$(ratio "$tc" "$ta")" "<= 0.05" "$(ok "$(ratio "$tc" "$ta")" "<=" 0.05)"
cmp "$WORK/b/iso/$name1" "$WORK/c/iso/$name1" || { echo "cold and warm builds differ" >&2; exit 1; }
td=$(build "$HOST2" "$WORK/d" "$CACHE" "zstd:$LEVEL")
row "(d)" "isofs build, second host $HOST2 after $HOST1" "$td s" "$(ratio "$td" "$ta")" "<= 0.1" "$(ok "$(ratio "$td" "$ta")" "<=" 0.1)"

# ---------------------------------------------------------------- (e), (g) mount throughput
mnt=$WORK/mnt
trap 'umount_isofs "$mnt"' EXIT
read -r mount_mibps reread_mibps hwm < <(stream_mounted "$mnt" "$name1" "$RUNS" "${IN[@]}" --hosts "$HOST1")
conv_mibps=$(page_cache_mibps "$conv1" "$RUNS")
ceiling_mibps=$(fuse_ceiling "$WORK/mnt-ceiling" 1024 "$RUNS")
re=$(ratio "$mount_mibps" "$conv_mibps")
row "(e)" "dd bs=4M, first read: isofs mount $mount_mibps MiB/s vs page cache $conv_mibps MiB/s" "$mount_mibps MiB/s" "$re" ">= 0.5" "$(ok "$re" ">=" 0.5)"
row "(e2)" "dd bs=4M, second read of the mounted ISO (kernel page cache)" "$reread_mibps MiB/s" "$(ratio "$reread_mibps" "$conv_mibps")" "" ""
row "(e3)" "dd bs=4M, FUSE ceiling: the isofs daemon serving free bytes ($(ratio "$mount_mibps" "$ceiling_mibps") of it reached)" "$ceiling_mibps MiB/s" "$(ratio "$ceiling_mibps" "$conv_mibps")" "" ""
row "(g)" "daemon peak RSS (VmHWM) streaming the ISO" "$((hwm / 1024)) MiB" "" "<= 256 MiB" "$(ok $((hwm / 1024)) "<=" 256)"

# ---------------------------------------------------------------- (f) sidecar
# The builds above recorded their SHA-256 in the cache; (f) is the hash a mount computes itself.
rm -rf "$CACHE/digests"
mount_isofs "$mnt" "$name1" "${IN[@]}" --hosts "$HOST1"
t0=$(now); sidecar=$(cat "$mnt/$name1.sha256"); tf=$(since "$t0")
cat "$conv1" > /dev/null
t0=$(now); openssl dgst -sha256 "$conv1" > /dev/null; tssl=$(since "$t0")
rf=$(ratio "$tf" "$tssl")
row "(f)" "first read of mounted .sha256 vs openssl dgst ($tssl s)" "$tf s" "$rf" "<= 1.25" "$(ok "$rf" "<=" 1.25)"
built=$(sha256sum "$WORK/c/iso/$name1" | cut -d' ' -f1)
[ "${sidecar%% *}" = "$built" ] || { echo "mounted sidecar ${sidecar%% *} != built ISO $built" >&2; exit 1; }
cmp "$mnt/$name1" "$WORK/c/iso/$name1" || { echo "mounted ISO differs from the built one" >&2; exit 1; }
umount_isofs "$mnt"
trap - EXIT

# ---------------------------------------------------------------- (h) bytes on disk
cache_bytes=$(du -sb "$CACHE" | cut -f1)
conv_bytes=$(( $(stat -c %s "$conv1") + $(stat -c %s "$conv2") ))
rh=$(ratio "$cache_bytes" "$conv_bytes")
row "(h)" "block cache for $HOST1+$HOST2 vs two conventional ISOs ($(mib "$conv_bytes") MiB)" "$(mib "$cache_bytes") MiB" "$rh" "" ""

echo
echo "World: $(du -sh "$WORLD/store" | cut -f1) store (SIZE=$SIZE), zstd level $LEVEL, $JOBS jobs, $(nproc) cores, fs.fuse.max_pages_limit $(fuse_max_pages). Checked: cold = warm build, mounted ISO = built ISO, mounted sidecar = sha256sum."
echo
echo "| step | what | figure | ratio to (a) | target | met |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
