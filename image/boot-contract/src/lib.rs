//! What `vigil-init` (PID 1 of the image) and the `vigil` daemon agree on about the A/B image:
//! the names of the root slots, the boot entries systemd-boot counts, and the files through
//! which the daemon talks to init. One definition, so the two sides cannot drift apart (see
//! image/README.md for the layout).

use std::fmt;

/// The daemon writes this once capture is bound (`vigil run --ready-file`): init then
/// blesses a slot on trial.
pub const READY_FILE: &str = "/run/vigil/ready";
/// The daemon writes this after installing a core update: init reboots into it.
pub const REBOOT_FILE: &str = "/run/vigil/reboot";
/// The directory of both files, made by init and owned by the daemon's user.
pub const RUN_DIR: &str = "/run/vigil";

/// Where the unified kernel images live on the EFI system partition (systemd-boot's
/// Boot Loader Specification type 2 entries).
pub const ENTRY_DIR: &str = "EFI/Linux";

/// The kernel command line word naming the booted slot (`vigil.slot=a`).
pub const SLOT_PARAMETER: &str = "vigil.slot";

/// The two root slots of the A/B layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

/// What a file in [`ENTRY_DIR`] is to one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `vigil-a.efi`: booted before and blessed.
    Blessed,
    /// `vigil-a+1-0.efi` and the like: systemd-boot counts its tries down.
    OnTrial,
    /// `vigil-a.partial`: an install cut short; never bootable.
    Partial,
}

impl Slot {
    /// `a` or `b`, as the command line and the partition names spell it.
    pub fn parse(text: &str) -> Option<Slot> {
        match text {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot the kernel command line names, if it names a valid one.
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline.split_ascii_whitespace().find_map(|word| {
            let (key, value) = word.split_once('=')?;
            (key == SLOT_PARAMETER).then(|| Slot::parse(value))?
        })
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The GPT partition name of this slot's root.
    pub fn root_partition(self) -> String {
        format!("vigil-root-{self}")
    }

    /// The entry of a slot that booted healthy.
    pub fn blessed_entry(self) -> String {
        format!("vigil-{self}.efi")
    }

    /// The entry of a freshly installed slot: one try, none used.
    pub fn trial_entry(self) -> String {
        format!("vigil-{self}+1-0.efi")
    }

    /// Where an entry is written before it is renamed into place.
    pub fn partial_entry(self) -> String {
        format!("vigil-{self}.partial")
    }

    /// What `file_name` in [`ENTRY_DIR`] is to this slot; `None` if it is not this slot's.
    pub fn entry_kind(self, file_name: &str) -> Option<EntryKind> {
        if file_name == self.blessed_entry() {
            return Some(EntryKind::Blessed);
        }
        if file_name == self.partial_entry() {
            return Some(EntryKind::Partial);
        }
        let counter = file_name
            .strip_prefix(&format!("vigil-{self}+"))?
            .strip_suffix(".efi")?;
        // systemd-boot's counter: `+LEFT` or `+LEFT-DONE`, digits only.
        let valid = counter
            .split('-')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        (valid && counter.split('-').count() <= 2).then_some(EntryKind::OnTrial)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_the_slot() {
        let line = "console=ttyS0 vigil.slot=b vigil.verity=1,2,x,y quiet";
        assert_eq!(Slot::from_cmdline(line), Some(Slot::B));
        assert_eq!(Slot::from_cmdline("vigil.slot=c"), None);
        assert_eq!(Slot::from_cmdline("vigil.slotx=a"), None);
        assert_eq!(Slot::from_cmdline("console=ttyS0"), None);
    }

    #[test]
    fn entries_are_told_apart_by_slot_and_state() {
        assert_eq!(Slot::A.entry_kind("vigil-a.efi"), Some(EntryKind::Blessed));
        assert_eq!(
            Slot::B.entry_kind(&Slot::B.trial_entry()),
            Some(EntryKind::OnTrial)
        );
        assert_eq!(
            Slot::B.entry_kind("vigil-b+0-1.efi"),
            Some(EntryKind::OnTrial)
        );
        assert_eq!(
            Slot::B.entry_kind("vigil-b+2.efi"),
            Some(EntryKind::OnTrial)
        );
        assert_eq!(
            Slot::A.entry_kind("vigil-a.partial"),
            Some(EntryKind::Partial)
        );
        assert_eq!(Slot::A.entry_kind("vigil-b.efi"), None);
        assert_eq!(Slot::A.entry_kind("vigil-a+x.efi"), None);
        assert_eq!(Slot::A.entry_kind("vigil-a+1-0-2.efi"), None);
        assert_eq!(Slot::A.entry_kind("vigil-ab.efi"), None);
    }

    #[test]
    fn slots_name_their_partitions() {
        assert_eq!(Slot::A.root_partition(), "vigil-root-a");
        assert_eq!(Slot::A.other(), Slot::B);
    }
}
