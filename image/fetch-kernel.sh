#!/usr/bin/env bash
# Fetches Debian's kernel package named in image/kernel-package into the cache directory
# ($VIGIL_IMAGE_CACHE, default /var/cache/vigil-image) unless it is there already, and prints the
# .deb's path. setup.sh calls it so image/build.sh later works offline; build.sh calls it too.
# The package name is read before anything changes directory: an empty cache must work as well as
# a warm one (tests/tests/setup_steps.rs runs this against a fresh, empty directory).
set -euo pipefail
PACKAGE="$(cat "$(dirname "$0")/kernel-package")"
CACHE="${VIGIL_IMAGE_CACHE:-/var/cache/vigil-image}"
mkdir -p "$CACHE"
find_deb() { ls "$CACHE/${PACKAGE}"_*_amd64.deb 2>/dev/null | head -1; }
DEB="$(find_deb || true)"
if [ -z "$DEB" ]; then
    # apt-get download writes into the working directory; a subshell keeps ours unchanged.
    (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$PACKAGE" >&2)
    DEB="$(find_deb || true)"
    if [ -z "$DEB" ]; then
        echo "fetch-kernel: apt-get download $PACKAGE left no .deb in $CACHE" >&2
        exit 1
    fi
fi
echo "$DEB"
