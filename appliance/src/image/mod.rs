//! The appliance image as the daemon sees it: signed core updates ([`update`]), the A/B slots
//! they are written to ([`slots`]), and what the running system reports ([`status`]). The image
//! itself is built by `image/build.sh` and booted by `vigil-init` (image/README.md).

pub mod slots;
pub mod status;
pub mod update;

#[cfg(test)]
mod tests;
