//! A/B health with systemd-boot's boot counting. An update installs its slot's unified kernel
//! image as `EFI/Linux/vigil-X+1-0.efi`; systemd-boot counts the try down when it starts it
//! (`+0-1`) and sorts an entry with no tries left after every other, so the old slot boots next
//! time unless init blesses this boot by dropping the counter once the daemon reports healthy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use vigil_boot_contract::{EntryKind, Slot, ENTRY_DIR};

/// This slot's boot entry if it still carries a counter (the slot is on trial).
pub fn entry_on_trial(esp: &Path, slot: Slot) -> io::Result<Option<PathBuf>> {
    let dir = esp.join(ENTRY_DIR);
    for entry in fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if slot.entry_kind(name) == Some(EntryKind::OnTrial) {
            return Ok(Some(dir.join(name)));
        }
    }
    Ok(None)
}

/// Marks the entry good: `vigil-b+0-1.efi` becomes `vigil-b.efi`.
pub fn bless(entry: &Path, slot: Slot) -> io::Result<PathBuf> {
    let blessed = entry.with_file_name(slot.blessed_entry());
    fs::rename(entry, &blessed)?;
    // FAT has no journal: make the rename durable before anyone pulls the plug.
    fs::File::open(entry.parent().unwrap_or(Path::new("/")))?.sync_all()?;
    Ok(blessed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blesses_only_the_booted_slot() {
        let esp = std::env::temp_dir().join(format!("vigil-init-esp-{}", std::process::id()));
        let linux = esp.join(ENTRY_DIR);
        fs::create_dir_all(&linux).expect("dir");
        fs::write(linux.join("vigil-a.efi"), b"a").expect("a");
        fs::write(linux.join("vigil-b+0-1.efi"), b"b").expect("b");
        assert_eq!(entry_on_trial(&esp, Slot::A).expect("read"), None);
        let trial = entry_on_trial(&esp, Slot::B)
            .expect("read")
            .expect("on trial");
        let blessed = bless(&trial, Slot::B).expect("bless");
        assert_eq!(blessed, linux.join("vigil-b.efi"));
        assert_eq!(fs::read(&blessed).expect("read"), b"b");
        assert_eq!(entry_on_trial(&esp, Slot::B).expect("read"), None);
        fs::remove_dir_all(&esp).expect("clean up");
    }
}
