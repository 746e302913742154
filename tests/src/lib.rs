//! Shared helpers for Vigil's whole-system tests.

pub mod browser;
pub mod forge;
pub mod guest;
pub mod http;
pub mod lab;
pub mod live;
pub mod load;
pub mod logs;
pub mod nats;
pub mod netns;
pub mod pcap;
pub mod samba;
pub mod vm;
pub mod workspace;
