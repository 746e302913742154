//! IPv4 (RFC 791) and IPv6 (RFC 8200) fragment reassembly, bounded in memory and in packet time,
//! so the flow table, stream reassembly and parsers only ever see whole datagrams.
//!
//! A datagram in progress is keyed by source, destination, protocol (IPv4 only: RFC 8200 keys
//! IPv6 by addresses and identification) and identification, plus the frame's VLAN, so two
//! VLANs reusing addresses never mix. The reassembled datagram keeps the link layer (MACs, VLAN
//! tags) of its first fragment and is decoded exactly as if it had arrived whole
//! ([`Datagram::decode`]).
//!
//! # Overlap policy
//!
//! An IDS must see what the end host sees, and where hosts differ, rather see too much than too
//! little: a datagram we drop but the host accepts is an evasion; one we keep but the host
//! drops is only traffic the attacker could have sent whole anyway.
//!
//! - **IPv4: first wins.** Bytes already held are kept; a later fragment only fills what is
//!   still missing: the "First" policy of Windows, Solaris and macOS, and what BSD and Linux
//!   before 4.19 do too unless the new fragment starts before the one it overlaps. Linux 4.19+
//!   drops such a datagram outright; keeping it, we still see what the other hosts accepted,
//!   and the conflicting bytes are counted whatever the host made of them.
//! - **IPv6: an overlap discards the whole datagram** (RFC 5722, as every current stack does),
//!   and its later fragments with it until its timeout. Only an exact retransmission (the same
//!   bytes again, wholly inside what is held) is ignored as a duplicate.
//! - Fragments disagreeing about the datagram's end (two last fragments, data past the last)
//!   discard the datagram, as Linux does.
//! - A **tiny first fragment** (RFC 1858: too short for the transport's fixed header, so its
//!   ports or flags ride in a later fragment; TCP 20 bytes, UDP and ICMP 8) is counted. IPv4
//!   hosts accept it, so it is reassembled; IPv6 hosts must drop it (RFC 7112: the first
//!   fragment holds the whole header chain), so the datagram is discarded.
//! - A datagram past `max_datagram_bytes` (65,535: no jumbograms) is discarded, with the rest
//!   of its fragments (ping of death).
//!
//! Every outcome is counted in [`FragmentStats`]: overlaps and the conflicting ones (overlapping
//! bytes that differ: an evasion attempt, whatever the policy), tiny first fragments, timeouts,
//! oversized datagrams, evictions and completions.
//!
//! # Bounds
//!
//! Fragment data lives in a pool of 512-byte blocks, at most `max_bytes` of them in total,
//! each covering one 512-byte stretch of one datagram with a bit per 8-byte unit received
//! (fragment offsets count in 8-byte units). The pool, the slots (`max_datagrams`) and the
//! buffer a datagram is reassembled into are reserved when the reassembler is made and reused,
//! so handling a fragment allocates nothing. When the pool or the slots run out, the oldest
//! datagram in progress is evicted and counted. A datagram not complete `timeout_secs` of packet
//! time after its first fragment arrived is dropped and counted ([`Reassembler::expire`]).
//!
//! Not covered: IPv6 jumbograms, and reassembly of fragments that arrive on different VLANs.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::Timestamp;

use super::{
    decode_transport, transport_header_len, walk_ipv6_extensions, Chain, Decoded, Fragment, Link,
    Skip,
};

/// Bytes of a datagram one pool block holds.
const BLOCK: usize = 512;
/// Fragment offsets count in 8-byte units; a block tracks its 64 units in one `u64`.
const UNIT: usize = 8;
const UNITS_PER_BLOCK: usize = BLOCK / UNIT;
/// The end of a list (blocks of a datagram, slots by age).
const NONE: u32 = u32::MAX;
/// IPv4's Total Length and IPv6's Payload Length are 16 bits (jumbograms are not reassembled).
pub const MAX_DATAGRAM_BYTES: usize = 65_535;
/// Every host must accept datagrams of 576 bytes (RFC 791); a smaller cap would refuse those.
const MIN_DATAGRAM_BYTES: usize = 576;

/// Reassembly bounds (`[fragments]` in the config). Packet-time seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FragmentConfig {
    /// Fragment data held at once over all datagrams in progress, counted in whole 512-byte
    /// blocks (a datagram of three 8-byte fragments takes one block). Raised to what one
    /// datagram of `max_datagram_bytes` needs. Bookkeeping adds 16 bytes a block and about 100
    /// a datagram, not counted here.
    pub max_bytes: usize,
    /// Datagrams in progress at once (including discarded ones kept to drop their later
    /// fragments); at least 1.
    pub max_datagrams: usize,
    /// A datagram not complete this long after its first fragment arrived is dropped. As long
    /// as the hosts behind the tap wait (Linux: 30 s for IPv4, 60 s for IPv6), or a host
    /// reassembles what we gave up on.
    pub timeout_secs: u64,
    /// Largest datagram reassembled (header included); larger ones are discarded. Between 576
    /// and 65,535.
    pub max_datagram_bytes: usize,
}

impl Default for FragmentConfig {
    fn default() -> Self {
        FragmentConfig {
            // Linux's ipfrag_high_thresh.
            max_bytes: 4 * 1024 * 1024,
            max_datagrams: 4096,
            timeout_secs: 60,
            max_datagram_bytes: MAX_DATAGRAM_BYTES,
        }
    }
}

/// What reassembly did, since the reassembler was made. The last three are gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentStats {
    /// Fragments taken in.
    pub fragments: u64,
    /// Datagrams reassembled and handed on.
    pub completed: u64,
    /// Fragments overlapping bytes already held (exact retransmissions included).
    pub overlaps: u64,
    /// Of those, the ones whose overlapping bytes differ from what is held.
    pub conflicting_overlaps: u64,
    /// IPv6 datagrams discarded for an overlap (RFC 5722).
    pub overlap_discards: u64,
    /// First fragments too short for the transport's fixed header (RFC 1858).
    pub tiny_first: u64,
    /// Datagrams discarded for growing past `max_datagram_bytes`.
    pub too_large: u64,
    /// Datagrams discarded because their fragments disagree about where it ends.
    pub inconsistent: u64,
    /// Fragments refused on their own: empty, or an IPv6 fragment that is not the last and
    /// whose length is not a multiple of 8.
    pub malformed: u64,
    /// Fragments dropped because their datagram was already discarded.
    pub discarded_fragments: u64,
    /// Datagrams still incomplete at their timeout.
    pub timeouts: u64,
    /// Datagrams in progress dropped to make room for newer ones.
    pub evicted: u64,
    /// Datagrams in progress now (discarded ones waiting out their timeout included).
    pub in_progress: u64,
    /// Fragment data held now (whole blocks).
    pub held_bytes: u64,
    /// The most fragment data ever held at once.
    pub peak_bytes: u64,
}

/// The stats of several reassemblers (a sharded capture's): counts and gauges add up; the peak
/// is the sum of each one's peak, a bound on the peak of all.
impl std::ops::AddAssign for FragmentStats {
    fn add_assign(&mut self, other: FragmentStats) {
        let FragmentStats {
            fragments,
            completed,
            overlaps,
            conflicting_overlaps,
            overlap_discards,
            tiny_first,
            too_large,
            inconsistent,
            malformed,
            discarded_fragments,
            timeouts,
            evicted,
            in_progress,
            held_bytes,
            peak_bytes,
        } = other;
        self.fragments += fragments;
        self.completed += completed;
        self.overlaps += overlaps;
        self.conflicting_overlaps += conflicting_overlaps;
        self.overlap_discards += overlap_discards;
        self.tiny_first += tiny_first;
        self.too_large += too_large;
        self.inconsistent += inconsistent;
        self.malformed += malformed;
        self.discarded_fragments += discarded_fragments;
        self.timeouts += timeouts;
        self.evicted += evicted;
        self.in_progress += in_progress;
        self.held_bytes += held_bytes;
        self.peak_bytes += peak_bytes;
    }
}

impl FragmentStats {
    /// Every non-zero count with its name, in a fixed order, for the run's summary.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("fragments", self.fragments),
            ("datagrams reassembled", self.completed),
            ("overlapping fragments", self.overlaps),
            ("conflicting overlaps", self.conflicting_overlaps),
            (
                "ipv6 datagrams discarded for overlaps",
                self.overlap_discards,
            ),
            ("tiny first fragments", self.tiny_first),
            ("datagrams too large", self.too_large),
            ("datagrams with inconsistent ends", self.inconsistent),
            ("malformed fragments", self.malformed),
            ("fragments of discarded datagrams", self.discarded_fragments),
            ("datagrams timed out", self.timeouts),
            ("datagrams evicted (bounds)", self.evicted),
            ("datagrams in progress at the end", self.in_progress),
            ("peak bytes held", self.peak_bytes),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
    }
}

/// A reassembled datagram, in the reassembler's buffer until the next fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The first fragment's link layer.
    pub link: Link,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4: the protocol. IPv6: the first fragment's Next Header.
    pub protocol: u8,
    pub v6: bool,
    /// The reassembled fragmentable part (IPv6: from its first extension or upper-layer header).
    pub payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Decodes the datagram as [`super::decode`] decodes one that arrived whole.
    pub fn decode(&self) -> Result<Decoded<'a>, Skip> {
        let transport = if self.v6 {
            match walk_ipv6_extensions(self.protocol, self.payload)? {
                Chain::Upper(protocol, bytes) => decode_transport(protocol, bytes, true)?,
                // Fragmented again inside a reassembled datagram: nothing real does that.
                Chain::Fragment(_) => return Err(Skip::Fragment),
            }
        } else {
            decode_transport(self.protocol, self.payload, false)?
        };
        Ok(Decoded {
            src_mac: self.link.src_mac,
            dst_mac: self.link.dst_mac,
            vlans: self.link.vlans,
            src: self.src,
            dst: self.dst,
            transport,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    ident: u32,
    /// IPv4's protocol; 0 for IPv6.
    protocol: u8,
    vlan: Option<u16>,
}

impl Key {
    fn of(fragment: &Fragment<'_>) -> Key {
        Key {
            src: fragment.src,
            dst: fragment.dst,
            ident: fragment.ident,
            protocol: if fragment.v6 { 0 } else { fragment.protocol },
            vlan: fragment.link.vlans.vlan_id(),
        }
    }
}

/// One 512-byte stretch of one datagram.
struct Block {
    data: [u8; BLOCK],
    /// Bit `u` set: unit `u` (bytes `8u..8u+8` of this block) was received.
    filled: u64,
    /// Which stretch of its datagram: bytes `chunk * 512..`.
    chunk: usize,
    /// The datagram's next block, in chunk order.
    next: u32,
}

/// One datagram in progress (or discarded, until its timeout).
struct Slot {
    key: Key,
    v6: bool,
    /// Dropped already: its later fragments are dropped too, until `deadline`.
    discarding: bool,
    deadline: Timestamp,
    /// The first fragment's link layer and (IPv6) Next Header, once it arrived.
    link: Link,
    protocol: u8,
    /// The datagram's blocks in chunk order.
    blocks: u32,
    /// Where the datagram ends, once its last fragment arrived.
    end: Option<usize>,
    /// The furthest byte any fragment reached.
    max_end: usize,
    /// 8-byte units received.
    units: usize,
    /// Neighbours in arrival order (oldest first), for timeouts and eviction.
    older: u32,
    newer: u32,
}

/// Puts fragments back together; see the module documentation.
pub struct Reassembler {
    config: FragmentConfig,
    timeout_micros: u64,
    max_blocks: usize,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    index: HashMap<Key, u32>,
    oldest: u32,
    newest: u32,
    blocks: Vec<Block>,
    free_blocks: Vec<u32>,
    /// Where a complete datagram is assembled ([`Datagram::payload`]).
    out: Vec<u8>,
    stats: FragmentStats,
}

/// Why a datagram left the reassembler.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gone {
    Completed,
    TimedOut,
    Evicted,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(FragmentConfig::default())
    }
}

impl Reassembler {
    /// A reassembler within `config`'s bounds (raised to their minimums), with its slots,
    /// block pool and output buffer reserved.
    pub fn new(config: FragmentConfig) -> Reassembler {
        let max_datagram_bytes = config
            .max_datagram_bytes
            .clamp(MIN_DATAGRAM_BYTES, MAX_DATAGRAM_BYTES);
        let max_blocks = (config.max_bytes / BLOCK).max(max_datagram_bytes.div_ceil(BLOCK));
        let max_datagrams = config.max_datagrams.max(1);
        let config = FragmentConfig {
            max_bytes: max_blocks * BLOCK,
            max_datagrams,
            timeout_secs: config.timeout_secs.max(1),
            max_datagram_bytes,
        };
        Reassembler {
            timeout_micros: config.timeout_secs.saturating_mul(1_000_000),
            max_blocks,
            slots: Vec::with_capacity(max_datagrams),
            free_slots: Vec::with_capacity(max_datagrams),
            index: HashMap::with_capacity(max_datagrams),
            oldest: NONE,
            newest: NONE,
            blocks: Vec::with_capacity(max_blocks),
            free_blocks: Vec::with_capacity(max_blocks),
            out: Vec::with_capacity(max_datagram_bytes),
            stats: FragmentStats::default(),
            config,
        }
    }

    /// The bounds in force (after raising to the minimums).
    pub fn config(&self) -> &FragmentConfig {
        &self.config
    }

    pub fn stats(&self) -> &FragmentStats {
        &self.stats
    }

    /// Memory the reassembler's tables have touched: the blocks and slots ever used (they are
    /// kept for reuse, so this is the high-water mark), the free lists, the index and the
    /// output buffer at their reserved sizes.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.blocks.len() * size_of::<Block>()
            + self.slots.len() * size_of::<Slot>()
            + (self.free_blocks.capacity() + self.free_slots.capacity()) * size_of::<u32>()
            + self.index.capacity() * (size_of::<(Key, u32)>() + 1)
            + self.out.capacity()
    }

    /// Takes in one fragment at packet time `now`; the datagram when this fragment completed
    /// it.
    pub fn push(&mut self, now: Timestamp, fragment: &Fragment<'_>) -> Option<Datagram<'_>> {
        self.stats.fragments += 1;
        let mut data = fragment.data;
        if fragment.more && !data.len().is_multiple_of(UNIT) {
            if fragment.v6 {
                // RFC 8200 4.5: discarded (with a Parameter Problem the host sends).
                self.stats.malformed += 1;
                return None;
            }
            // IPv4: what Linux keeps of it.
            data = &data[..data.len() - data.len() % UNIT];
        }
        if data.is_empty() {
            self.stats.malformed += 1;
            return None;
        }
        let (start, end) = (fragment.offset, fragment.offset + data.len());
        let slot = self.slot_for(now, fragment);
        if self.slots[slot].discarding {
            self.stats.discarded_fragments += 1;
            return None;
        }
        if fragment.header_len + end > self.config.max_datagram_bytes {
            self.stats.too_large += 1;
            self.discard(slot);
            return None;
        }
        let held = &mut self.slots[slot];
        let consistent = if fragment.more {
            held.end.is_none_or(|known| end <= known)
        } else {
            held.end.is_none_or(|known| known == end) && held.max_end <= end
        };
        if !consistent {
            self.stats.inconsistent += 1;
            self.discard(slot);
            return None;
        }
        // Known before the overlap check, as Linux does: a duplicate last fragment still says
        // where the datagram ends.
        if !fragment.more {
            held.end = Some(end);
        }
        held.max_end = held.max_end.max(end);
        if start == 0 && !holds_transport_header(fragment.protocol, fragment.v6, data) {
            self.stats.tiny_first += 1;
            if fragment.v6 {
                self.discard(slot);
                return None;
            }
        }
        let units = (end - start).div_ceil(UNIT);
        let (already, differs) = self.compare(slot, start, data);
        if already > 0 {
            self.stats.overlaps += 1;
            if differs {
                self.stats.conflicting_overlaps += 1;
            }
            if fragment.v6 && (differs || already < units) {
                self.stats.overlap_discards += 1;
                self.discard(slot);
                return None;
            }
        }
        // Nothing new when all of it is held: the first copy stands.
        if already < units {
            if !self.reserve(slot, start, end) {
                self.remove(slot, Gone::Evicted);
                return None;
            }
            self.write(slot, start, data);
            if start == 0 {
                let held = &mut self.slots[slot];
                held.link = fragment.link;
                held.protocol = fragment.protocol;
            }
        }
        let held = &self.slots[slot];
        match held.end {
            Some(total) if held.units == total.div_ceil(UNIT) => Some(self.complete(slot, total)),
            _ => None,
        }
    }

    /// Drops the datagrams whose time is up at packet time `now`. Cheap when none is: call it
    /// on every clock tick.
    pub fn expire(&mut self, now: Timestamp) {
        while self.oldest != NONE && self.slots[self.oldest as usize].deadline <= now {
            self.remove(self.oldest as usize, Gone::TimedOut);
        }
    }

    /// The datagram `fragment` belongs to, opened if new (evicting the oldest when full); one
    /// whose time is up is dropped first.
    fn slot_for(&mut self, now: Timestamp, fragment: &Fragment<'_>) -> usize {
        let key = Key::of(fragment);
        if let Some(&slot) = self.index.get(&key) {
            let slot = slot as usize;
            if self.slots[slot].deadline > now {
                return slot;
            }
            self.remove(slot, Gone::TimedOut);
        }
        if self.index.len() >= self.config.max_datagrams {
            self.remove(self.oldest as usize, Gone::Evicted);
        }
        let slot = Slot {
            key,
            v6: fragment.v6,
            discarding: false,
            deadline: Timestamp(now.0.saturating_add(self.timeout_micros)),
            link: fragment.link,
            protocol: fragment.protocol,
            blocks: NONE,
            end: None,
            max_end: 0,
            units: 0,
            older: self.newest,
            newer: NONE,
        };
        let at = match self.free_slots.pop() {
            Some(free) => {
                self.slots[free as usize] = slot;
                free
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        match self.newest {
            NONE => self.oldest = at,
            newest => self.slots[newest as usize].newer = at,
        }
        self.newest = at;
        self.index.insert(key, at);
        self.stats.in_progress = self.index.len() as u64;
        at as usize
    }

    /// How many of the units `data` covers from `start` are held already, and whether any held
    /// byte differs from `data`'s.
    fn compare(&self, slot: usize, start: usize, data: &[u8]) -> (usize, bool) {
        let end = start + data.len();
        let (mut already, mut differs) = (0, false);
        let mut block = self.slots[slot].blocks;
        while block != NONE {
            let b = &self.blocks[block as usize];
            let base = b.chunk * BLOCK;
            let (from, to) = (start.max(base), end.min(base + BLOCK));
            if from < to {
                let mask = unit_mask(from - base, to - base) & b.filled;
                already += mask.count_ones() as usize;
                for (lo, hi) in runs(mask) {
                    // Clipped to the fragment: the units at its edges may be partly outside.
                    let (a, z) = ((base + lo * UNIT).max(from), (base + hi * UNIT).min(to));
                    differs |= b.data[a - base..z - base] != data[a - start..z - start];
                }
            }
            block = b.next;
        }
        (already, differs)
    }

    /// Makes sure every 512-byte stretch from `start` to `end` has a block, evicting the oldest
    /// other datagrams while the pool is short. False when no other datagram holds any (the
    /// pool is sized so that this cannot happen).
    fn reserve(&mut self, slot: usize, start: usize, end: usize) -> bool {
        for chunk in start / BLOCK..=(end - 1) / BLOCK {
            if self.find_block(slot, chunk).is_some() {
                continue;
            }
            let block = loop {
                if let Some(free) = self.free_blocks.pop() {
                    break free;
                }
                if self.blocks.len() < self.max_blocks {
                    self.blocks.push(Block {
                        data: [0; BLOCK],
                        filled: 0,
                        chunk: 0,
                        next: NONE,
                    });
                    break (self.blocks.len() - 1) as u32;
                }
                let victim = match self.oldest {
                    oldest if oldest as usize == slot => self.slots[slot].newer,
                    oldest => oldest,
                };
                if victim == NONE {
                    return false;
                }
                self.remove(victim as usize, Gone::Evicted);
            };
            self.insert_block(slot, block, chunk);
            let held = (self.blocks.len() - self.free_blocks.len()) * BLOCK;
            self.stats.held_bytes = held as u64;
            self.stats.peak_bytes = self.stats.peak_bytes.max(held as u64);
        }
        true
    }

    fn find_block(&self, slot: usize, chunk: usize) -> Option<u32> {
        let mut block = self.slots[slot].blocks;
        while block != NONE {
            let b = &self.blocks[block as usize];
            if b.chunk == chunk {
                return Some(block);
            }
            if b.chunk > chunk {
                return None;
            }
            block = b.next;
        }
        None
    }

    /// Links `block`, emptied, into `slot`'s list at `chunk`'s place.
    fn insert_block(&mut self, slot: usize, block: u32, chunk: usize) {
        let mut prev = NONE;
        let mut next = self.slots[slot].blocks;
        while next != NONE && self.blocks[next as usize].chunk < chunk {
            prev = next;
            next = self.blocks[next as usize].next;
        }
        let b = &mut self.blocks[block as usize];
        b.filled = 0;
        b.chunk = chunk;
        b.next = next;
        match prev {
            NONE => self.slots[slot].blocks = block,
            prev => self.blocks[prev as usize].next = block,
        }
    }

    /// Copies the units of `data` not held yet (first wins) into `slot`'s blocks, which
    /// [`Reassembler::reserve`] made.
    fn write(&mut self, slot: usize, start: usize, data: &[u8]) {
        let end = start + data.len();
        let mut units = 0;
        let mut block = self.slots[slot].blocks;
        while block != NONE {
            let b = &mut self.blocks[block as usize];
            let base = b.chunk * BLOCK;
            let (from, to) = (start.max(base), end.min(base + BLOCK));
            if from < to {
                let new = unit_mask(from - base, to - base) & !b.filled;
                for (lo, hi) in runs(new) {
                    let (a, z) = ((base + lo * UNIT).max(from), (base + hi * UNIT).min(to));
                    b.data[a - base..z - base].copy_from_slice(&data[a - start..z - start]);
                }
                b.filled |= new;
                units += new.count_ones() as usize;
            }
            block = b.next;
        }
        self.slots[slot].units += units;
    }

    /// Copies the complete datagram of `total` bytes into the output buffer and lets the slot
    /// go.
    fn complete(&mut self, slot: usize, total: usize) -> Datagram<'_> {
        self.out.clear();
        let mut block = self.slots[slot].blocks;
        while block != NONE {
            let b = &self.blocks[block as usize];
            let len = BLOCK.min(total - b.chunk * BLOCK);
            self.out.extend_from_slice(&b.data[..len]);
            block = b.next;
        }
        let held = &self.slots[slot];
        let (link, src, dst, protocol, v6) = (
            held.link,
            held.key.src,
            held.key.dst,
            held.protocol,
            held.v6,
        );
        self.remove(slot, Gone::Completed);
        Datagram {
            link,
            src,
            dst,
            protocol,
            v6,
            payload: &self.out,
        }
    }

    /// Gives a datagram's blocks back and keeps its slot, until its timeout, to drop its later
    /// fragments.
    fn discard(&mut self, slot: usize) {
        self.free_blocks_of(slot);
        self.slots[slot].discarding = true;
    }

    fn free_blocks_of(&mut self, slot: usize) {
        let mut block = std::mem::replace(&mut self.slots[slot].blocks, NONE);
        while block != NONE {
            self.free_blocks.push(block);
            block = self.blocks[block as usize].next;
        }
        self.stats.held_bytes = ((self.blocks.len() - self.free_blocks.len()) * BLOCK) as u64;
    }

    fn remove(&mut self, slot: usize, why: Gone) {
        self.free_blocks_of(slot);
        let held = &self.slots[slot];
        let (older, newer, key, discarding) = (held.older, held.newer, held.key, held.discarding);
        match older {
            NONE => self.oldest = newer,
            older => self.slots[older as usize].newer = newer,
        }
        match newer {
            NONE => self.newest = older,
            newer => self.slots[newer as usize].older = older,
        }
        self.index.remove(&key);
        self.free_slots.push(slot as u32);
        self.stats.in_progress = self.index.len() as u64;
        match why {
            Gone::Completed => self.stats.completed += 1,
            Gone::TimedOut if !discarding => self.stats.timeouts += 1,
            Gone::Evicted if !discarding => self.stats.evicted += 1,
            _ => {}
        }
    }
}

/// Whether a first fragment's `data` holds the transport's fixed header (IPv6: after the
/// extension headers, which must all be there too).
fn holds_transport_header(protocol: u8, v6: bool, data: &[u8]) -> bool {
    if !v6 {
        return data.len() >= transport_header_len(protocol, false);
    }
    match walk_ipv6_extensions(protocol, data) {
        Ok(Chain::Upper(upper, rest)) => rest.len() >= transport_header_len(upper, true),
        _ => false,
    }
}

/// The bits of the units overlapping bytes `from..to` of a block (`from < to <= 512`).
fn unit_mask(from: usize, to: usize) -> u64 {
    let (lo, hi) = (from / UNIT, to.div_ceil(UNIT));
    let width = hi - lo;
    let ones = if width >= UNITS_PER_BLOCK {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    ones << lo
}

/// The runs of consecutive set bits of `mask`, as unit ranges `lo..hi`.
fn runs(mut mask: u64) -> impl Iterator<Item = (usize, usize)> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let lo = mask.trailing_zeros() as usize;
        let len = (mask >> lo).trailing_ones() as usize;
        let hi = lo + len;
        mask &= if hi >= UNITS_PER_BLOCK {
            (1u64 << lo) - 1
        } else {
            !(((1u64 << len) - 1) << lo)
        };
        Some((lo, hi))
    })
}

#[cfg(test)]
mod tests;
