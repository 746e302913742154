//! A doorkeeper in front of a scan model's pattern store: a device's first flow is held in a
//! small fixed table, and the device enters the store (bounded, and costly per device) only
//! when it is seen again, its held flow replayed first so that it is learned exactly as if it
//! had entered at once.
//!
//! A flood of one-packet sources from forged addresses then costs one slot write per packet,
//! and never pushes the learned patterns of real devices out of the store. A held device whose
//! slot is taken by another newcomer before it comes back loses that one sighting: its age
//! counts from its next one. Held flows are not part of the saved state for the same reason.

use alloc::vec::Vec;
use core::net::IpAddr;

use crate::Timestamp;

/// Slots in the table: newcomers in flight at once before they start displacing each other.
const SLOTS: usize = 4096;
const _: () = assert!(SLOTS.is_power_of_two(), "slot_of keeps the top bits");

/// A device seen once: when, and the one target it touched then, if it touched one.
#[derive(Debug, Clone)]
pub struct Held<D, T> {
    pub device: IpAddr,
    pub first: Timestamp,
    pub touch: Option<(Timestamp, D, T)>,
}

#[derive(Debug, Clone)]
pub struct Newcomers<D, T> {
    /// Empty until the first newcomer: a model that never sees one costs nothing.
    slots: Vec<Option<Held<D, T>>>,
}

impl<D, T> Default for Newcomers<D, T> {
    fn default() -> Self {
        Newcomers { slots: Vec::new() }
    }
}

impl<D, T> Newcomers<D, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The held flow of `device`, if it is held.
    pub fn get_mut(&mut self, device: IpAddr) -> Option<&mut Held<D, T>> {
        let slot = self.slots.get_mut(slot_of(device))?;
        slot.as_mut().filter(|held| held.device == device)
    }

    /// Takes `device`'s held flow out of the table.
    pub fn take(&mut self, device: IpAddr) -> Option<Held<D, T>> {
        let slot = self.slots.get_mut(slot_of(device))?;
        if slot.as_ref().is_some_and(|held| held.device == device) {
            slot.take()
        } else {
            None
        }
    }

    /// Holds a newcomer's first flow, in place of whichever newcomer had its slot.
    pub fn hold(&mut self, held: Held<D, T>) {
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        if let Some(slot) = self.slots.get_mut(slot_of(held.device)) {
            *slot = Some(held);
        }
    }

    /// Newcomers held now.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fibonacci hashing of the address: cheap, and spreads the consecutive or random addresses of
/// a flood evenly over the slots (the product's top bits depend on every bit of the address).
fn slot_of(device: IpAddr) -> usize {
    let bits: u64 = match device {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let wide = u128::from(v6);
            // Both halves: interface ids and prefixes both vary between devices.
            (wide as u64) ^ ((wide >> 64) as u64).rotate_left(32)
        }
    };
    let mixed = bits.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    usize::try_from(mixed >> (64 - SLOTS.trailing_zeros())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_held_device_is_found_until_taken_and_a_newcomer_in_its_slot_replaces_it() {
        let mut table: Newcomers<IpAddr, u16> = Newcomers::new();
        table.hold(Held {
            device: ip(1),
            first: Timestamp(5),
            touch: Some((Timestamp(5), ip(1), 445)),
        });
        assert_eq!(table.get_mut(ip(1)).map(|h| h.first), Some(Timestamp(5)));
        assert!(table.get_mut(ip(2)).is_none());
        let rival = (2..u32::MAX)
            .map(ip)
            .find(|other| slot_of(*other) == slot_of(ip(1)))
            .expect("some address shares the slot");
        table.hold(Held {
            device: rival,
            first: Timestamp(6),
            touch: None,
        });
        assert!(table.get_mut(ip(1)).is_none());
        assert!(table.take(rival).is_some());
        assert!(table.is_empty());
    }

    #[test]
    fn a_flood_of_consecutive_addresses_spreads_over_the_slots() {
        let mut used = alloc::collections::BTreeSet::new();
        for n in 0..SLOTS as u32 {
            used.insert(slot_of(ip(0x0a00_0000 + n)));
        }
        // A uniform spread fills about 1 - 1/e of the slots.
        assert!(used.len() > SLOTS / 2, "{} slots used", used.len());
    }
}
