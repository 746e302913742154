//! Core update files, as the management API receives them from anyone holding the token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::image::update::Update;

fuzz_target!(|data: &[u8]| {
    if let Ok(update) = Update::decode(data) {
        let manifest = &update.manifest;
        // Parts are only offsets until verified; they must never be trusted to fit.
        let _ = (
            manifest.root.offset.checked_add(manifest.root.len),
            &manifest.verity,
        );
        for part in &manifest.uki {
            let _ = part.offset.checked_add(part.len);
        }
    }
});
