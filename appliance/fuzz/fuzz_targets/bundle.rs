//! Bundle and delegation files, as an appliance receives them from anyone who can push one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::bundle::{Bundle, SignedDelegation, DEFAULT_MAX_BUNDLE_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = Bundle::decode(data, DEFAULT_MAX_BUNDLE_BYTES) {
        // Only the canonical encoding decodes, so the signed bytes are the bytes on disk.
        assert_eq!(
            bundle.encode().expect("a decoded bundle encodes"),
            data,
            "a decoded bundle encodes to other bytes"
        );
        let checked = bundle
            .check_signatures()
            .expect("a decoded manifest encodes");
        assert_eq!(checked.len(), bundle.signatures.len());
        let _ = (bundle.wasm_matches_manifest(), bundle.manifest.check());
    }
    if let Ok(delegation) = SignedDelegation::decode(data) {
        assert_eq!(
            delegation.encode().expect("a decoded delegation encodes"),
            data,
            "a decoded delegation encodes to other bytes"
        );
        let _ = delegation.delegation.check();
        let _ = delegation.delegation.signed_digest();
    }
});
