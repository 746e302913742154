#!/usr/bin/env bash
# Builds the flashable Vigil appliance image, offline once the kernel package is cached:
#
#   image/build.sh [--version V] [--out DIR] [--api-token T] [--capture IF]
#                  [--management IF=ADDR/PREFIX] [--health-timeout SECS]
#
# Inputs: Debian's kernel package (apt-get download once, cached in $VIGIL_IMAGE_CACHE), the
# static musl `vigil` and `vigil-init`, the signed plugin bundles and trust dir that
# plugins/sign-dev.sh made, and the core signing key. Outputs in DIR (default
# $CARGO_TARGET_DIR/image):
#   vigil-appliance.img        GPT disk image: ESP, root slots A and B, data partition
#   vigil-core-V.vupdate       the same core as a signed update (`vigil image apply`)
# Two builds from the same inputs and SOURCE_DATE_EPOCH give the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC
TARGET="${CARGO_TARGET_DIR:-target}"
TARGET="$(cd "$TARGET" && pwd)"
CACHE="${VIGIL_IMAGE_CACHE:-/var/cache/vigil-image}"
KERNEL_PACKAGE="$(cat image/kernel-package)"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 1767225600)}"
export SOURCE_DATE_EPOCH

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
OUT="$TARGET/image"
API_TOKEN="${VIGIL_API_TOKEN:-}"
CAPTURE=eth0
MANAGEMENT="eth1=10.77.0.2/24"
HEALTH_TIMEOUT=300
SIGNING_KEY="${VIGIL_CORE_KEY:-$TARGET/dev-keys/core.key}"
VIGIL_HOST="$TARGET/release/vigil"
MUSL="$TARGET/x86_64-unknown-linux-musl/release"
while [ $# -gt 0 ]; do
    case "$1" in
        --version) VERSION="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --api-token) API_TOKEN="$2"; shift 2 ;;
        --capture) CAPTURE="$2"; shift 2 ;;
        --management) MANAGEMENT="$2"; shift 2 ;;
        --health-timeout) HEALTH_TIMEOUT="$2"; shift 2 ;;
        --vigil) VIGIL_BINARY="$2"; shift 2 ;;
        *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
VIGIL_BINARY="${VIGIL_BINARY:-$MUSL/vigil}"
if [ -z "$API_TOKEN" ]; then
    echo "build.sh: give --api-token (at least 16 characters) or set VIGIL_API_TOKEN" >&2
    exit 2
fi
MGMT_IF="${MANAGEMENT%%=*}"
MGMT_ADDR="${MANAGEMENT#*=}"

# Sizes (MiB). A slot holds the compressed root plus its hash tree with room to grow.
ESP_MIB=96 SLOT_MIB=160 DATA_MIB=64
VIGIL_UID=990

WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK" "$CACHE"
echo "==> vigil $VERSION image (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"

# Stable identifiers, derived from the version so that two builds agree.
uuid() { # uuid NAME: a name-based UUID
    local h
    h="$(printf 'vigil %s %s' "$VERSION" "$1" | sha256sum | cut -c1-32)"
    echo "${h:0:8}-${h:8:4}-5${h:13:3}-a${h:17:3}-${h:20:12}"
}
# The disk's own identifiers do not change with the version: updates write slots, not the table.
disk_uuid() {
    local h
    h="$(printf 'vigil disk %s' "$1" | sha256sum | cut -c1-32)"
    echo "${h:0:8}-${h:8:4}-5${h:13:3}-a${h:17:3}-${h:20:12}"
}
settle_times() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }
# objcopy (PE timestamp), mtools (FAT directory entries) and mke2fs (inode and journal times)
# read the clock; they see SOURCE_DATE_EPOCH, frozen.
at_epoch() { faketime -f "$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')" "$@"; }

echo "==> kernel ($KERNEL_PACKAGE)"
DEB="$(VIGIL_IMAGE_CACHE="$CACHE" image/fetch-kernel.sh)"
dpkg -x "$DEB" "$WORK/kernel"
KVER="$(ls "$WORK/kernel/lib/modules")"
VMLINUZ="$WORK/kernel/boot/vmlinuz-$KVER"

echo "==> initramfs (vigil-init and the modules it loads)"
INITRD_DIR="$WORK/initramfs"
mkdir -p "$INITRD_DIR"/{dev,proc,sys,run,newroot,lib/modules}
strip -o "$INITRD_DIR/init" "$MUSL/vigil-init"
chmod 0755 "$INITRD_DIR/init"
depmod -b "$WORK/kernel" "$KVER"
: >"$INITRD_DIR/lib/modules/load.list"
while read -r module; do
    case "$module" in ''|'#'*) continue ;; esac
    modprobe -d "$WORK/kernel" -S "$KVER" --show-depends "$module" |
        awk '$1 == "insmod" { print $2 }'
done <image/modules | awk '!seen[$0]++' | while read -r path; do
    name="$(basename "$path")"
    cp "$path" "$INITRD_DIR/lib/modules/$name"
    echo "/lib/modules/$name" >>"$INITRD_DIR/lib/modules/load.list"
done
settle_times "$INITRD_DIR"
(cd "$INITRD_DIR" && find . -mindepth 1 | sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | zstd -q -19 >"$WORK/initrd.zst"

echo "==> root filesystem (erofs) with its dm-verity hash tree"
ROOT_DIR="$WORK/root"
mkdir -p "$ROOT_DIR"/{dev,proc,sys,run,efi,tmp,var/lib/vigil,usr/bin,usr/lib/vigil/plugins,etc/vigil}
# Debug info stays with the build; the root carries the stripped program.
strip -o "$ROOT_DIR/usr/bin/vigil" "$VIGIL_BINARY"
chmod 0755 "$ROOT_DIR/usr/bin/vigil"
cp "$TARGET"/bundles/*.vbundle "$ROOT_DIR/usr/lib/vigil/plugins/"
cp -r "$TARGET/dev-trust" "$ROOT_DIR/etc/vigil/trust"
# Plugins compiled now, for any x86-64 CPU: the appliance starts without compiling, and the
# only code it maps comes from this verified root.
"$VIGIL_HOST" plugins precompile --plugins "$ROOT_DIR/usr/lib/vigil/plugins" \
    --trust "$ROOT_DIR/etc/vigil/trust" --data-dir "$WORK/precompile-data" \
    --target x86_64-unknown-linux-musl --out "$ROOT_DIR/usr/lib/vigil/modules" >/dev/null
cat >"$ROOT_DIR/etc/os-release" <<OSREL
NAME=Vigil
ID=vigil
PRETTY_NAME="Vigil appliance $VERSION"
IMAGE_ID=vigil
IMAGE_VERSION=$VERSION
OSREL
chmod -R u=rwX,go=rX "$ROOT_DIR"
settle_times "$ROOT_DIR"
mkfs.erofs --quiet -zlz4hc -T"$SOURCE_DATE_EPOCH" -U "$(uuid root)" --all-root \
    "$WORK/root.erofs" "$ROOT_DIR"
ROOT_BYTES=$(stat -c %s "$WORK/root.erofs")
DATA_BLOCKS=$(( (ROOT_BYTES + 4095) / 4096 ))
truncate -s $((DATA_BLOCKS * 4096)) "$WORK/root.erofs"
SALT="$(printf 'vigil root salt %s' "$VERSION" | sha256sum | cut -c1-64)"
cp "$WORK/root.erofs" "$WORK/slot.img"
ROOT_HASH="$(veritysetup format --no-superblock --salt "$SALT" --hash-offset $((DATA_BLOCKS * 4096)) \
    "$WORK/slot.img" "$WORK/slot.img" | awk '/^Root hash:/ { print $3 }')"
if [ $(stat -c %s "$WORK/slot.img") -gt $((SLOT_MIB << 20)) ]; then
    echo "build.sh: the root and its hash tree outgrow a ${SLOT_MIB} MiB slot" >&2
    exit 1
fi
VERITY="$DATA_BLOCKS,$DATA_BLOCKS,$ROOT_HASH,$SALT"

echo "==> unified kernel images (one per slot; root hash $ROOT_HASH)"
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
for slot in a b; do
    printf '%s' "console=tty0 console=ttyS0,115200 lockdown=integrity module.sig_enforce=1 \
panic=0 vigil.slot=$slot vigil.verity=$VERITY vigil.health_timeout=$HEALTH_TIMEOUT" \
        >"$WORK/cmdline-$slot"
    sed "s/^PRETTY_NAME=.*/PRETTY_NAME=\"Vigil $VERSION (slot $slot)\"/" \
        "$ROOT_DIR/etc/os-release" >"$WORK/osrel-$slot"
    at_epoch objcopy \
        --add-section .osrel="$WORK/osrel-$slot" --change-section-vma .osrel=0x20000 \
        --add-section .cmdline="$WORK/cmdline-$slot" --change-section-vma .cmdline=0x30000 \
        --add-section .linux="$VMLINUZ" --change-section-vma .linux=0x2000000 \
        --add-section .initrd="$WORK/initrd.zst" --change-section-vma .initrd=0x3000000 \
        "$STUB" "$WORK/uki-$slot.efi"
    if [ -n "${VIGIL_SB_KEY:-}" ]; then
        sbsign --key "$VIGIL_SB_KEY" --cert "$VIGIL_SB_CERT" --output "$WORK/uki-$slot.efi" \
            "$WORK/uki-$slot.efi"
    fi
done

echo "==> EFI system partition (systemd-boot)"
ESP_DIR="$WORK/esp"
mkdir -p "$ESP_DIR/EFI/BOOT" "$ESP_DIR/EFI/Linux" "$ESP_DIR/loader"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$ESP_DIR/EFI/BOOT/BOOTX64.EFI"
if [ -n "${VIGIL_SB_KEY:-}" ]; then
    sbsign --key "$VIGIL_SB_KEY" --cert "$VIGIL_SB_CERT" --output "$ESP_DIR/EFI/BOOT/BOOTX64.EFI" \
        "$ESP_DIR/EFI/BOOT/BOOTX64.EFI"
fi
cp "$WORK/uki-a.efi" "$ESP_DIR/EFI/Linux/vigil-a.efi"
# No menu, no editor: the command line with its root hash cannot be changed at boot.
printf 'timeout 0\neditor no\nauto-entries no\nauto-firmware no\nrandom-seed-mode off\n' \
    >"$ESP_DIR/loader/loader.conf"
settle_times "$ESP_DIR"
at_epoch mkfs.fat -C -F 32 -n VIGIL-ESP -i 5649474c --invariant "$WORK/esp.img" $((ESP_MIB * 1024)) >/dev/null
at_epoch mcopy -s -p -m -Q -i "$WORK/esp.img" "$ESP_DIR"/EFI "$ESP_DIR"/loader ::/

echo "==> data partition (ext4: appliance.toml, vigil.toml)"
DATA_DIR="$WORK/data"
mkdir -p "$DATA_DIR"
cat >"$DATA_DIR/appliance.toml" <<TOML
# Read by vigil-init at boot: the ports.
capture = "$CAPTURE"

[management]
iface = "$MGMT_IF"
address = "$MGMT_ADDR"
TOML
cat >"$DATA_DIR/vigil.toml" <<TOML
# The appliance's settings (vigil run --config). Plugins and trust always come from the
# verified root (vigil-init passes --plugins and --trust).

[host]
# This partition is not verified and is mounted noexec: no compiled code is kept here. The
# plugins come compiled (for any x86-64 CPU) on the verified root.
cache_modules = false
precompiled_dir = "/usr/lib/vigil/modules"
portable_code = true

[api]
listen = "${MGMT_ADDR%/*}:8470"
token = "$API_TOKEN"
# HTTPS only: the certificate is made on first boot in tls/ on this partition, and its
# fingerprint logged on the console.
tls = true
TOML
chmod 0600 "$DATA_DIR"/*.toml
chown -R "$VIGIL_UID:$VIGIL_UID" "$DATA_DIR"
settle_times "$DATA_DIR"
at_epoch mkfs.ext4 -q -F -O ^resize_inode -L vigil-data -U "$(disk_uuid data)" \
    -E "root_owner=$VIGIL_UID:$VIGIL_UID,hash_seed=$(disk_uuid data-hash)" \
    -d "$DATA_DIR" "$WORK/data.img" "${DATA_MIB}M"
# mke2fs copies each file's change time, which no tool can set on the host: set it here.
(cd "$DATA_DIR" && find . -mindepth 1 | sort) | while read -r path; do
    for field in ctime ctime_extra; do
        value="@$SOURCE_DATE_EPOCH"
        [ "$field" = ctime_extra ] && value=0
        echo "set_inode_field ${path#.} $field $value"
    done
done | debugfs -w -f - "$WORK/data.img" >/dev/null 2>&1

echo "==> disk image (GPT)"
IMG="$OUT/vigil-appliance.img"
MIB=$((1 << 20)) SECTORS_PER_MIB=2048
ESP_START=1 SLOT_A_START=$((1 + ESP_MIB)) SLOT_B_START=$((1 + ESP_MIB + SLOT_MIB))
DATA_START=$((1 + ESP_MIB + 2 * SLOT_MIB))
TOTAL_MIB=$((DATA_START + DATA_MIB + 1))
rm -f "$IMG"
truncate -s $((TOTAL_MIB * MIB)) "$IMG"
part() { # part START_MIB SIZE_MIB TYPE NAME
    echo "start=$(($1 * SECTORS_PER_MIB)), size=$(($2 * SECTORS_PER_MIB)), type=$3, uuid=$(disk_uuid "$4"), name=\"$4\""
}
{
    echo "label: gpt"
    echo "label-id: $(disk_uuid label)"
    echo "unit: sectors"
    part $ESP_START $ESP_MIB C12A7328-F81F-11D2-BA4B-00A0C93EC93B esp
    part $SLOT_A_START $SLOT_MIB 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 vigil-root-a
    part $SLOT_B_START $SLOT_MIB 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 vigil-root-b
    part $DATA_START $DATA_MIB 0FC63DAF-8483-4772-8E79-3D69D8477DE4 vigil-data
} | sfdisk --quiet --no-reread --no-tell-kernel "$IMG"
put() { dd if="$1" of="$IMG" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$WORK/esp.img" $ESP_START
put "$WORK/slot.img" $SLOT_A_START
put "$WORK/data.img" $DATA_START

echo "==> signed core update"
UPDATE="$OUT/vigil-core-$VERSION.vupdate"
"$VIGIL_HOST" image pack --version "$VERSION" --root "$WORK/slot.img" --verity "$VERITY" \
    --uki-a "$WORK/uki-a.efi" --uki-b "$WORK/uki-b.efi" --key "$SIGNING_KEY" --out "$UPDATE"

echo "$ROOT_HASH" >"$OUT/root-hash"
printf '%s  %s\n' "$(sha256sum "$IMG" | cut -d' ' -f1)" "$(basename "$IMG")"
echo "image: $IMG ($(du -h --apparent-size "$IMG" | cut -f1), slot A root $((ROOT_BYTES >> 10)) KiB)"
echo "update: $UPDATE"
