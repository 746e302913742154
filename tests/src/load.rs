//! Traffic for the live benchmarks: UDP datagrams of 64 bytes from many sockets of a namespace
//! (so RSS spreads them over every queue), as fast as the sender can or paced.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Sender threads (the machine's cores are shared with the receiver) and sockets per thread.
const THREADS: usize = 2;
const SOCKETS: usize = 8;
const PAYLOAD: [u8; 64] = [0x5a; 64];

/// Sends datagrams from `from` in `ns` to `target` for `duration`, at `rate` per second in all
/// (as fast as it can with `None`); returns how many were sent.
pub fn udp_flood(
    ns: &Netns,
    from: Ipv4Addr,
    target: Ipv4Addr,
    rate: Option<u64>,
    duration: Duration,
) -> u64 {
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            ns.thread(move || {
                let sockets: Vec<UdpSocket> = (0..SOCKETS)
                    .map(|_| {
                        let socket = UdpSocket::bind((from, 0)).expect("bind");
                        socket.connect((target, 9)).expect("connect");
                        socket
                    })
                    .collect();
                let per_thread = rate.map(|r| r / THREADS as u64);
                let start = Instant::now();
                let end = start + duration;
                let mut sent = 0u64;
                while Instant::now() < end {
                    for socket in &sockets {
                        // A full socket buffer is a loss on the sender's side, not counted.
                        if socket.send(&PAYLOAD).is_ok() {
                            sent += 1;
                        }
                    }
                    if let Some(rate) = per_thread {
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(ahead) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(ahead);
                        }
                    }
                }
                sent
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("sender")).sum()
}
