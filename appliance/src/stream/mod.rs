//! TCP stream reassembly: each direction of a flow becomes an in-order byte stream for the
//! protocol parsers, within fixed bounds.
//!
//! Bounds: a direction buffers at most `max_direction_bytes` of unparsed data and
//! `max_out_of_order` early segments; the whole table at most `max_total_bytes`. Past a bound the
//! data is dropped and counted, and the direction resynchronises at the next segment (parsers
//! find message boundaries again), so a hostile peer costs counters, not memory. Works from the
//! middle of a connection: the first segment seen sets the starting sequence number.

use std::collections::HashMap;

/// Sizes, from the operator's config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    pub max_direction_bytes: usize,
    pub max_out_of_order: usize,
    pub max_total_bytes: usize,
    pub max_streams: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_direction_bytes: 256 * 1024,
            max_out_of_order: 16,
            max_total_bytes: 64 * 1024 * 1024,
            max_streams: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Segments that arrived before data missing in front of them.
    pub out_of_order: u64,
    /// Holes given up on: the bytes never came (or the out-of-order store was full).
    pub gaps: u64,
    /// Retransmitted or overlapping bytes trimmed.
    pub overlap_bytes: u64,
    /// Bytes dropped because a bound was reached.
    pub dropped_bytes: u64,
    /// Flows not reassembled because the table was full.
    pub streams_refused: u64,
}

impl std::ops::AddAssign for StreamStats {
    fn add_assign(&mut self, other: StreamStats) {
        self.out_of_order += other.out_of_order;
        self.gaps += other.gaps;
        self.overlap_bytes += other.overlap_bytes;
        self.dropped_bytes += other.dropped_bytes;
        self.streams_refused += other.streams_refused;
    }
}

/// Sequence-number arithmetic modulo 2^32 (RFC 793): is `a` before `b`?
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// One direction of a TCP connection.
#[derive(Debug, Default)]
struct Direction {
    next_seq: Option<u32>,
    data: Vec<u8>,
    early: Vec<(u32, Vec<u8>)>,
    /// Set when bytes were lost: the parser should look for its next message boundary.
    desynced: bool,
}

impl Direction {
    /// In-order bytes not yet consumed.
    fn data(&self) -> &[u8] {
        &self.data
    }

    /// Drops `n` parsed bytes from the front.
    fn consume(&mut self, n: usize) {
        let n = n.min(self.data.len());
        self.data.drain(..n);
    }

    fn buffered(&self) -> usize {
        self.data.len() + self.early.iter().map(|(_, d)| d.len()).sum::<usize>()
    }

    /// Takes one segment. Returns how many bytes joined the in-order data.
    fn segment(
        &mut self,
        syn: bool,
        seq: u32,
        payload: &[u8],
        config: &StreamConfig,
        room: usize,
        stats: &mut StreamStats,
    ) -> usize {
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        let next = *self.next_seq.get_or_insert(seq);
        if payload.is_empty() {
            return 0;
        }
        if seq_lt(next, seq) {
            // Early: keep it for when the hole fills, within bounds.
            stats.out_of_order += 1;
            if self.early.len() >= config.max_out_of_order || payload.len() > room {
                self.early.push((seq, payload.to_vec()));
                return self.skip_hole(config, room, stats);
            }
            self.early.push((seq, payload.to_vec()));
            return 0;
        }
        let appended = self.append(next, seq, payload, config, room, stats);
        appended + self.drain_early(config, room, stats)
    }

    /// Appends the part of `payload` (starting at `seq`) that lies at or after `next`.
    fn append(
        &mut self,
        next: u32,
        seq: u32,
        payload: &[u8],
        config: &StreamConfig,
        room: usize,
        stats: &mut StreamStats,
    ) -> usize {
        let overlap = next.wrapping_sub(seq) as usize;
        if overlap >= payload.len() {
            stats.overlap_bytes += payload.len() as u64;
            return 0;
        }
        stats.overlap_bytes += overlap as u64;
        let fresh = &payload[overlap..];
        self.next_seq = Some(next.wrapping_add(fresh.len() as u32));
        let limit = config.max_direction_bytes.min(self.data.len() + room);
        if self.data.len() + fresh.len() > limit {
            // The parser is not keeping up (a message larger than the bound): drop what is
            // buffered and resynchronise on what comes next.
            stats.dropped_bytes += (self.data.len() + fresh.len()) as u64;
            self.data.clear();
            self.desynced = true;
            return 0;
        }
        self.data.extend_from_slice(fresh);
        fresh.len()
    }

    fn drain_early(
        &mut self,
        config: &StreamConfig,
        room: usize,
        stats: &mut StreamStats,
    ) -> usize {
        let mut added = 0;
        while let Some(next) = self.next_seq {
            let Some(at) = self.early.iter().position(|(seq, _)| !seq_lt(next, *seq)) else {
                break;
            };
            let (seq, bytes) = self.early.swap_remove(at);
            added += self.append(next, seq, &bytes, config, room.saturating_sub(added), stats);
        }
        added
    }

    /// Gives up on the hole in front of the early segments: the bytes before it that wait for
    /// it are dropped, and the stream goes on from the earliest segment held.
    /// The peer acknowledged up to `ack`: a hole before it will never fill (the capture missed
    /// those bytes, the peer did not), so it is given up now rather than when the store fills.
    fn acked(
        &mut self,
        ack: u32,
        config: &StreamConfig,
        room: usize,
        stats: &mut StreamStats,
    ) -> usize {
        match self.next_seq {
            Some(next) if !self.early.is_empty() && seq_lt(next, ack) => {
                self.skip_hole(config, room, stats)
            }
            _ => 0,
        }
    }

    fn skip_hole(&mut self, config: &StreamConfig, room: usize, stats: &mut StreamStats) -> usize {
        let Some(earliest) =
            self.early
                .iter()
                .map(|(seq, _)| *seq)
                .reduce(|a, b| if seq_lt(b, a) { b } else { a })
        else {
            return 0;
        };
        stats.gaps += 1;
        stats.dropped_bytes += self.data.len() as u64;
        self.data.clear();
        self.next_seq = Some(earliest);
        self.desynced = true;
        self.drain_early(config, room, stats)
    }
}

/// Both directions of one connection.
#[derive(Debug, Default)]
struct Stream {
    to_responder: Direction,
    to_originator: Direction,
}

/// Every reassembled connection, by flow id.
pub struct StreamTable {
    config: StreamConfig,
    streams: HashMap<u64, Stream>,
    /// Bytes buffered across all streams, kept current so a segment costs O(1).
    total: usize,
    stats: StreamStats,
}

impl StreamTable {
    pub fn new(config: StreamConfig) -> StreamTable {
        StreamTable {
            config,
            streams: HashMap::new(),
            total: 0,
            stats: StreamStats::default(),
        }
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Adds a segment of flow `flow`; returns the direction's in-order data when some arrived.
    pub fn segment(
        &mut self,
        flow: u64,
        from_originator: bool,
        syn: bool,
        seq: u32,
        payload: &[u8],
    ) -> Option<&[u8]> {
        if !self.streams.contains_key(&flow) {
            if self.streams.len() >= self.config.max_streams {
                self.stats.streams_refused += 1;
                return None;
            }
            self.streams.insert(flow, Stream::default());
        }
        let room = self.config.max_total_bytes.saturating_sub(self.total);
        let stream = self.streams.get_mut(&flow)?;
        let direction = if from_originator {
            &mut stream.to_responder
        } else {
            &mut stream.to_originator
        };
        let before = direction.buffered();
        let added = direction.segment(syn, seq, payload, &self.config, room, &mut self.stats);
        let after = direction.buffered();
        self.total = self.total + after - before;
        let direction = self.direction(flow, from_originator)?;
        (added > 0).then_some(direction.data())
    }

    /// A segment from one side acknowledged `ack`: the other side's stream may give up a hole
    /// (see [`Direction::acked`]). Returns whether bytes joined that stream's in-order data.
    pub fn acked(&mut self, flow: u64, from_originator: bool, ack: u32) -> bool {
        let room = self.config.max_total_bytes.saturating_sub(self.total);
        let config = &self.config;
        let stats = &mut self.stats;
        let Some(stream) = self.streams.get_mut(&flow) else {
            return false;
        };
        // The acknowledged bytes are the ones the other side sent.
        let direction = if from_originator {
            &mut stream.to_originator
        } else {
            &mut stream.to_responder
        };
        let before = direction.buffered();
        let added = direction.acked(ack, config, room, stats);
        let after = direction.buffered();
        self.total = self.total + after - before;
        added > 0
    }

    fn direction(&mut self, flow: u64, from_originator: bool) -> Option<&mut Direction> {
        let stream = self.streams.get_mut(&flow)?;
        Some(if from_originator {
            &mut stream.to_responder
        } else {
            &mut stream.to_originator
        })
    }

    /// Drops `n` parsed bytes from the front of a direction.
    pub fn consume(&mut self, flow: u64, from_originator: bool, n: usize) {
        if let Some(direction) = self.direction(flow, from_originator) {
            let before = direction.buffered();
            direction.consume(n);
            let after = direction.buffered();
            self.total -= before - after;
        }
    }

    /// The direction's unparsed in-order bytes.
    pub fn data(&mut self, flow: u64, from_originator: bool) -> &[u8] {
        self.direction(flow, from_originator)
            .map_or(&[], |direction| direction.data())
    }

    /// Whether bytes were lost in that direction since the last call (and clears the flag).
    pub fn take_desync(&mut self, flow: u64, from_originator: bool) -> bool {
        self.direction(flow, from_originator)
            .is_some_and(|direction| std::mem::take(&mut direction.desynced))
    }

    /// Forgets a flow (it ended).
    pub fn remove(&mut self, flow: u64) {
        if let Some(stream) = self.streams.remove(&flow) {
            self.total -= stream.to_responder.buffered() + stream.to_originator.buffered();
        }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> StreamTable {
        StreamTable::new(StreamConfig {
            max_direction_bytes: 64,
            max_out_of_order: 2,
            max_total_bytes: 1024,
            max_streams: 2,
        })
    }

    fn data(table: &mut StreamTable, flow: u64) -> Vec<u8> {
        table.data(flow, true).to_vec()
    }

    #[test]
    fn in_order_segments_after_a_syn_join_up() {
        let mut t = table();
        t.segment(1, true, true, 1000, b"");
        t.segment(1, true, false, 1001, b"GET /");
        t.segment(1, true, false, 1006, b" HTTP/1.0");
        assert_eq!(data(&mut t, 1), b"GET / HTTP/1.0");
    }

    #[test]
    fn out_of_order_and_retransmitted_segments_are_put_right() {
        let mut t = table();
        t.segment(1, true, false, 100, b"abc");
        t.segment(1, true, false, 106, b"ghi");
        t.segment(1, true, false, 103, b"def");
        t.segment(1, true, false, 101, b"bcdefg");
        assert_eq!(data(&mut t, 1), b"abcdefghi");
        assert_eq!(t.stats().out_of_order, 1);
        assert_eq!(t.stats().overlap_bytes, 6);
    }

    #[test]
    fn a_hole_that_never_fills_is_a_counted_gap_and_the_stream_goes_on_after_it() {
        let mut t = table();
        t.segment(1, true, false, 0, b"aa");
        // Byte 2 never comes: what follows it is held until the store is full, then taken in
        // order from the earliest segment, and the bytes stuck before the hole are dropped.
        t.segment(1, true, false, 3, b"bb");
        t.segment(1, true, false, 5, b"cc");
        assert_eq!(data(&mut t, 1), b"aa");
        t.segment(1, true, false, 7, b"dd");
        assert_eq!(t.stats().gaps, 1);
        assert_eq!(t.stats().dropped_bytes, 2);
        assert_eq!(data(&mut t, 1), b"bbccdd");
        assert!(t.take_desync(1, true));
        assert!(!t.take_desync(1, true));
        t.segment(1, true, false, 9, b"e");
        assert_eq!(data(&mut t, 1), b"bbccdde");
    }

    #[test]
    fn an_ack_past_a_hole_gives_it_up_at_once() {
        let mut t = table();
        t.segment(1, true, false, 0, b"aa");
        t.segment(1, true, false, 3, b"bb");
        // The responder acknowledges byte 2: it got it, the capture did not.
        assert!(!t.acked(1, false, 2));
        assert_eq!(data(&mut t, 1), b"aa");
        assert!(t.acked(1, false, 5));
        assert_eq!(t.stats().gaps, 1);
        assert_eq!(data(&mut t, 1), b"bb");
        assert!(t.take_desync(1, true));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = table();
        t.segment(1, true, false, u32::MAX - 1, b"ab");
        t.segment(1, true, false, 0, b"cd");
        assert_eq!(data(&mut t, 1), b"abcd");
    }

    #[test]
    fn bounds_hold_under_a_flood() {
        let mut t = table();
        for i in 0..1000u32 {
            t.segment(1, true, false, i * 10, &[b'x'; 10]);
        }
        assert!(data(&mut t, 1).len() <= 64);
        assert!(t.stats().dropped_bytes > 0);
        assert!(t.segment(2, true, false, 0, b"a").is_some());
        assert!(
            t.segment(3, true, false, 0, b"a").is_none(),
            "table is full"
        );
        assert_eq!(t.stats().streams_refused, 1);
        t.consume(2, true, 1);
        t.remove(1);
        assert_eq!(t.total, 0, "accounting returns to zero");
    }
}
