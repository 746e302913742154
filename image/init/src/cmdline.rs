//! What the boot entry tells init, read from `/proc/cmdline`. Each slot's unified kernel image
//! carries its own command line, signed with it under Secure Boot, so the root hash here is
//! the one the vendor built: an altered root cannot bring a matching hash along.

use vigil_boot_contract::{Slot, SLOT_PARAMETER};

/// dm-verity parameters of a slot: the root filesystem is `data_blocks` 4 KiB blocks at the
/// start of the partition, its hash tree starts at block `hash_start` of the same partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    pub data_blocks: u64,
    pub hash_start: u64,
    pub root_hash: String,
    pub salt: String,
}

/// Settings init takes from the kernel command line. Anything else there (`init=`, `rdinit=`
/// aside, which the kernel consumes) is ignored: init never hands PID 1 to another program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSettings {
    pub slot: Slot,
    pub verity: Verity,
    /// Seconds the daemon has to report healthy before a slot on trial is given up.
    pub health_timeout_secs: u64,
}

const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 300;

/// Parses `vigil.slot=a vigil.verity=DATA_BLOCKS,HASH_START,ROOT_HASH,SALT
/// [vigil.health_timeout=SECS]`.
pub fn parse(cmdline: &str) -> Result<BootSettings, String> {
    let mut slot = None;
    let mut verity = None;
    let mut health_timeout_secs = DEFAULT_HEALTH_TIMEOUT_SECS;
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            SLOT_PARAMETER => {
                slot = Some(
                    Slot::parse(value).ok_or(format!("{SLOT_PARAMETER}={value}: not a or b"))?,
                )
            }
            "vigil.verity" => verity = Some(parse_verity(value)?),
            "vigil.health_timeout" => {
                health_timeout_secs = value
                    .parse()
                    .map_err(|_| format!("vigil.health_timeout={value}: not a number"))?
            }
            _ => {}
        }
    }
    Ok(BootSettings {
        slot: slot.ok_or(format!("the kernel command line names no {SLOT_PARAMETER}"))?,
        verity: verity.ok_or("the kernel command line carries no vigil.verity root hash")?,
        health_timeout_secs,
    })
}

fn parse_verity(value: &str) -> Result<Verity, String> {
    let parts: Vec<&str> = value.split(',').collect();
    let [data_blocks, hash_start, root_hash, salt] = parts[..] else {
        return Err(format!(
            "vigil.verity={value}: want DATA_BLOCKS,HASH_START,ROOT_HASH,SALT"
        ));
    };
    let number = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| format!("vigil.verity: {text:?} is not a block count"))
    };
    let hex = |text: &str, what: &str| {
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(text.to_ascii_lowercase())
        } else {
            Err(format!("vigil.verity: the {what} is not 64 hex digits"))
        }
    };
    let verity = Verity {
        data_blocks: number(data_blocks)?,
        hash_start: number(hash_start)?,
        root_hash: hex(root_hash, "root hash")?,
        salt: hex(salt, "salt")?,
    };
    if verity.data_blocks == 0 || verity.hash_start < verity.data_blocks {
        return Err("vigil.verity: the hash tree must follow a non-empty root".into());
    }
    Ok(verity)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "5f1c0a6d52a5b0e3d3f8f7b7c5a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3";

    #[test]
    fn reads_slot_verity_and_timeout() {
        let line = format!(
            "console=ttyS0 vigil.slot=b vigil.verity=100,101,{HASH},{HASH} init=/bin/sh \
             vigil.health_timeout=30 quiet"
        );
        let settings = parse(&line).expect("parses");
        assert_eq!(settings.slot, Slot::B);
        assert_eq!(settings.verity.data_blocks, 100);
        assert_eq!(settings.verity.hash_start, 101);
        assert_eq!(settings.verity.root_hash, HASH);
        assert_eq!(settings.health_timeout_secs, 30);
    }

    #[test]
    fn refuses_a_boot_entry_without_a_root_hash() {
        assert!(parse("vigil.slot=a").unwrap_err().contains("root hash"));
        assert!(parse(&format!("vigil.verity=1,1,{HASH},{HASH}"))
            .unwrap_err()
            .contains("vigil.slot"));
        assert!(parse(&format!("vigil.slot=c vigil.verity=1,1,{HASH},{HASH}")).is_err());
        assert!(parse("vigil.slot=a vigil.verity=1,1,abc,def").is_err());
        assert!(parse(&format!("vigil.slot=a vigil.verity=10,5,{HASH},{HASH}")).is_err());
    }
}
