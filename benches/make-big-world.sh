#!/usr/bin/env bash
# A larger world for benchmarks: the fixture world (fixtures/make-world.sh OUT) plus extra store paths
# unpacked from Debian packages (dpkg -x), added to every host's manifest. Real binaries, libraries,
# headers and data files give zstd and the squashfs packer realistic work: large files, thousands of
# small ones, several hosts sharing them.
#
# usage: benches/make-big-world.sh OUT
# env:   SIZE=1100   MiB of extra store content, at least (packages are added in order until reached)
#        PACKAGES="…" the ordered list ("@kernel" = the fixture kernel's own .deb, modules included)
# Deterministic for a given set of .debs (cached in OUT/.debs, as make-world.sh does); idempotent.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SIZE=${SIZE:-1100}
PACKAGES=${PACKAGES:-"libicu72 libboost1.81-dev libllvm15 @kernel libllvm16 golang-1.19-go libstd-rust-dev gcc-12 libclang-cpp15 llvm-15 golang-1.19-src"}

"$REPO/fixtures/make-world.sh" "$1"
OUT=$(cd "$1" && pwd)
base_stamp=$(cat "$OUT/.world-complete")
stamp_want=$( { cat "$0"; echo "$base_stamp $SIZE $PACKAGES"; } | sha256sum | cut -c1-64)
if [ "$(cat "$OUT/.big-world-complete" 2>/dev/null)" = "$stamp_want" ]; then
    echo "big world up to date: $OUT"
    exit 0
fi
rm -f "$OUT/.big-world-complete"

# Manifests as make-world.sh wrote them, kept so the overlay can be redone from scratch.
if [ "$(cat "$OUT/.big-base-stamp" 2>/dev/null)" != "$base_stamp" ]; then
    rm -rf "$OUT/.big-base-manifests"
    cp -a "$OUT/manifests" "$OUT/.big-base-manifests"
    printf '%s\n' "$base_stamp" > "$OUT/.big-base-stamp"
    rm -f "$OUT/.big-world-paths"
fi
if [ -f "$OUT/.big-world-paths" ]; then
    while read -r p; do
        r=$OUT/store/${p#/nix/store/}
        [ -e "$r" ] && chmod -R u+w "$r" && rm -rf "$r"
    done < "$OUT/.big-world-paths"
fi
chmod -R u+w "$OUT/manifests"
cp -a "$OUT/.big-base-manifests/." "$OUT/manifests/"

# shellcheck source=fixtures/store-hash.sh
. "$REPO/fixtures/store-hash.sh"

deb_of() { # package name -> cached .deb path (downloaded once)
    local pkg=$1
    local found
    if [ "$pkg" = @kernel ]; then
        found=("$OUT/.debs"/linux-image-[0-9]*.deb)
    else
        found=("$OUT/.debs/${pkg}"_*.deb)
        if [ ! -e "${found[0]}" ]; then
            (cd "$OUT/.debs" && apt-get download "$pkg" >&2)
            found=("$OUT/.debs/${pkg}"_*.deb)
        fi
    fi
    [ -e "${found[0]}" ] || { echo "no .deb for $pkg" >&2; exit 1; }
    printf '%s' "${found[0]}"
}

added=()
total=0
for pkg in $PACKAGES; do
    [ "$total" -ge $((SIZE * 1048576)) ] && break
    deb=$(deb_of "$pkg")
    name=$(dpkg-deb -f "$deb" Package)-$(dpkg-deb -f "$deb" Version | tr ':~+' '___')
    p=/nix/store/$(store_hash "$name")-$name
    r=$OUT/store/${p#/nix/store/}
    mkdir -p "$r"
    dpkg -x "$deb" "$r"
    # A Nix store holds no setuid/setgid bits and nothing writable.
    chmod -R u-s,g-s,a-w,a+rX "$r"
    find "$r" -exec touch -h -d @1 {} +
    bytes=$(du -sb "$r" | cut -f1)
    total=$((total + bytes))
    added+=("$p")
    printf 'added %-28s %5d MiB  %s\n' "$pkg" $((bytes / 1048576)) "$p"
done
[ "$total" -ge $((SIZE * 1048576)) ] || echo "warning: only $((total / 1048576)) MiB added (SIZE=$SIZE)" >&2

printf '%s\n' "${added[@]}" > "$OUT/.big-world-paths"
new=$(printf '%s\n' "${added[@]}" | jq -R . | jq -s .)
for m in "$OUT"/manifests/*.json; do
    jq --argjson new "$new" '.storePaths = (.storePaths + $new | unique)' "$m" > "$m.tmp"
    mv "$m.tmp" "$m"
    touch -h -d @1 "$m"
done
printf '%s\n' "$stamp_want" > "$OUT/.big-world-complete"
echo "big world built: $OUT (+$((total / 1048576)) MiB in ${#added[@]} store paths, $(du -sh "$OUT/store" | cut -f1) store)"
