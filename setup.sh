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
# servers and connections of the inline test; tcpreplay: forged frames onto a veth; samba,
# smbclient and libnss-wrapper: the real SMB1 logins of tests/tests/smb1_ntlm.rs; avahi-daemon,
# samba (nmbd), samba-common-bin (nmblookup), dnsutils (dig) and python3 (the LLMNR responder):
# the local name protocols test (tests/tests/local_names.rs); nats-server: the fleet broker the
# fleet tests start on loopback (tests/tests/fleet.rs). Those daemons run only inside the
# tests' namespaces: policy-rc.d keeps package scripts from starting them system-wide, and what
# this run installs is not enabled for the next boot either.
# The rest builds the flashable image (image/build.sh:
# kmod for module dependencies, faketime for reproducible timestamps, erofs, dm-verity, GPT, FAT and ext4 tools, systemd-boot and its
# stub, sbsigntool for Secure Boot) and boots it in its test (qemu with OVMF firmware; openssl
# unlocks the Secure Boot test key OVMF ships, and makes the operator certificates of
# tests/tests/api_tls.rs). chromium and chromium-driver: the real headless browser the console
# tests drive over WebDriver (tests/src/browser.rs).
samba_before=$(dpkg-query -W -f='${Status}' samba 2>/dev/null || true)
avahi_before=$(dpkg-query -W -f='${Status}' avahi-daemon 2>/dev/null || true)
nats_before=$(dpkg-query -W -f='${Status}' nats-server 2>/dev/null || true)
made_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
fi
apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates iproute2 iputils-ping ethtool nmap tshark tcpdump \
    musl-tools dnsmasq-base isc-dhcp-client socat tcpreplay \
    samba smbclient libnss-wrapper samba-common-bin avahi-daemon dnsutils python3 nats-server \
    kmod cpio zstd faketime erofs-utils cryptsetup-bin fdisk mtools dosfstools e2fsprogs \
    systemd-boot-efi sbsigntool openssl qemu-system-x86 ovmf \
    chromium chromium-driver \
    >/dev/null
if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
if [[ $samba_before != *installed* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --quiet smbd nmbd 2>/dev/null || true
fi
if [[ $avahi_before != *installed* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --quiet avahi-daemon avahi-daemon.socket 2>/dev/null || true
fi
if [[ $nats_before != *installed* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --quiet nats-server 2>/dev/null || true
fi

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
