#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root) to build, run and test Vigil, then builds everything:
# the `vigil` appliance (release) and every plugin (wasm32), signed into bundles with a
# development key made here (see plugins/sign-dev.sh).
set -euo pipefail
cd "$(dirname "$0")"

echo "==> Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# iproute2/ethtool: the namespaces and veth pairs of the live tests; nmap: real scans in them;
# tshark: the benchmark's baseline; musl-tools: the static binary the flashable image carries;
# dnsmasq-base/isc-dhcp-client: the real DHCP exchange of the device identity test; socat: the
# servers and connections of the inline test; tcpreplay: forged frames onto a veth; avahi-daemon,
# samba (nmbd), samba-common-bin (nmblookup), dnsutils (dig) and python3 (the LLMNR responder): the
# local name protocols test (tests/tests/local_names.rs). The rest builds the flashable image (image/build.sh:
# kmod for module dependencies, faketime for reproducible timestamps, erofs, dm-verity, GPT, FAT and ext4 tools, systemd-boot and its
# stub, sbsigntool for Secure Boot) and boots it in its test (qemu with OVMF firmware; openssl
# unlocks the Secure Boot test key OVMF ships).
apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates iproute2 iputils-ping ethtool nmap tshark tcpdump \
    musl-tools dnsmasq-base isc-dhcp-client socat tcpreplay \
    avahi-daemon samba samba-common-bin dnsutils python3 \
    kmod cpio zstd faketime erofs-utils cryptsetup-bin fdisk mtools dosfstools e2fsprogs \
    systemd-boot-efi sbsigntool openssl qemu-system-x86 ovmf \
    >/dev/null

echo "==> Rust toolchain and targets"
if ! command -v cargo >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends rustup >/dev/null
    rustup default 1.95
fi
rustup target add wasm32-unknown-unknown x86_64-unknown-linux-musl

echo "==> cargo-fuzz"
# The fuzz smoke test (tests/tests/fuzz_smoke.rs) runs every target in appliance/fuzz.
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

echo "==> Plugins (wasm32)"
cargo build --profile plugin --target wasm32-unknown-unknown -p 'vigil-plugin-*'

echo "==> Appliance (release)"
cargo build --release -p appliance

echo "==> Signed plugin bundles (development key)"
./plugins/sign-dev.sh

echo "==> Static vigil and vigil-init (musl) for the appliance image"
cargo build --release --target x86_64-unknown-linux-musl -p appliance -p vigil-init

echo "==> Debian kernel package for the image (cached; image/build.sh then works offline)"
./image/fetch-kernel.sh >/dev/null

echo "Done. Try: cargo run --release -p appliance -- demo"
