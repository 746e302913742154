#!/usr/bin/env bash
# Signs every built plugin into a bundle with a development key, so the appliance runs them with
# signatures checked (no --allow-unsigned). Makes, once, under $TARGET:
#   dev-keys/root.key(.pub)    the development root (a vendor keeps theirs offline)
#   dev-keys/signer.key(.pub)  the plugin-signing key the root delegates to
#   dev-keys/core.key(.pub)    the core-update-signing key (image/build.sh)
#   dev-trust/                 the trust dir the appliance built here uses by default
#   bundles/*.vbundle          one signed bundle per plugin, rebuilt every time
set -euo pipefail
export VIGIL_LOG="${VIGIL_LOG:-warn}"
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
VIGIL="$TARGET/release/vigil"
KEYS="$TARGET/dev-keys"
TRUST="$TARGET/dev-trust"
BUNDLES="$TARGET/bundles"
mkdir -p "$KEYS" "$BUNDLES"
[ -f "$KEYS/root.key" ] || "$VIGIL" key generate --out "$KEYS/root.key"
[ -f "$KEYS/signer.key" ] || "$VIGIL" key generate --out "$KEYS/signer.key"
[ -f "$KEYS/core.key" ] || "$VIGIL" key generate --out "$KEYS/core.key"
[ -d "$TRUST/roots" ] || "$VIGIL" trust init --trust "$TRUST" --root "$KEYS/root.key.pub"
# Version 2 added the core key ('*' covers plugins, never the core); a trust dir made with
# version 1 is moved on to it.
if [ ! -f "$KEYS/delegation-2.vdlg" ]; then
    "$VIGIL" trust delegate --root-key "$KEYS/root.key" --version 2 --days 3650 \
        --out "$KEYS/delegation-2.vdlg" \
        --key "$KEYS/signer.key.pub" --name "development signer" --plugins '*' \
        --key "$KEYS/core.key.pub" --name "development core signer" --plugins vigil-core
fi
"$VIGIL" trust show --trust "$TRUST" | grep -q "development core signer" ||
    "$VIGIL" trust install --trust "$TRUST" "$KEYS/delegation-2.vdlg"
rm -f "$BUNDLES"/*.vbundle
for wasm in "$TARGET"/wasm32-unknown-unknown/plugin/vigil_plugin_*.wasm; do
    name="$(basename "$wasm" .wasm)"
    name="${name#vigil_plugin_}"
    bundle="$BUNDLES/${name//_/-}.vbundle"
    "$VIGIL" bundle build --wasm "$wasm" --out "$bundle" >/dev/null
    "$VIGIL" bundle sign --key "$KEYS/signer.key" "$bundle" >/dev/null
done
echo "signed $(ls "$BUNDLES" | wc -l) plugin bundles into $BUNDLES (trust: $TRUST)"
