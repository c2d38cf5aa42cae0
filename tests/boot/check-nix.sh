#!/usr/bin/env bash
# Parses every Nix file the fixtures ship (the installer module and a generated flake, if given).
# usage: tests/boot/check-nix.sh [WORLD]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
files=("$REPO/mount-helpers/installer.nix")
if [ $# -ge 1 ]; then
    while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$1/flake" -name '*.nix' -print0 | LC_ALL=C sort -z)
fi
for f in "${files[@]}"; do
    nix-instantiate --parse "$f" > /dev/null
    echo "parsed: $f"
done
