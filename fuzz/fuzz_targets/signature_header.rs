//! Arbitrary bytes as an `X-Signature` header and a body for `verify`: it never panics, and
//! whatever the body, `sign` then `verify` round-trips inside the tolerance window and fails
//! outside it, for another secret, or for a body one byte off.
//!
//! Input layout: the first byte is the header's length; the header is the next bytes (as
//! text, lossily); the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use order_engine::http::signature::{sign, verify, SignatureError};

const SECRET: &[u8] = b"fuzz-secret";
const TOLERANCE: u64 = 300;
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = rest.split_at(usize::from(len).min(rest.len()));
    let header = String::from_utf8_lossy(header);

    // Arbitrary header: any answer, but no panic; an accepted one names a t and a v1.
    if verify(&header, body, SECRET, TOLERANCE, NOW).is_ok() {
        assert!(
            header.contains("t=") && header.contains("v1="),
            "{header:?}"
        );
    }

    // Round trip anywhere in the window, at its edges included.
    for t in [NOW, NOW - 300, NOW + 300] {
        let signed = sign(body, SECRET, t);
        assert_eq!(
            verify(&signed, body, SECRET, TOLERANCE, NOW),
            Ok(()),
            "{signed}"
        );
        // Key rotation: extra parts (the fuzzed header) do not stop a matching v1, unless
        // they carry a second t.
        let second_t = header
            .split(',')
            .any(|part| part.split_once('=').is_some_and(|(k, _)| k.trim() == "t"));
        if !second_t {
            let rotated = format!("{header},{signed}");
            assert_eq!(
                verify(&rotated, body, SECRET, TOLERANCE, NOW),
                Ok(()),
                "{rotated:?}"
            );
        }
    }
    for t in [NOW - 301, NOW + 301] {
        let signed = sign(body, SECRET, t);
        assert_eq!(
            verify(&signed, body, SECRET, TOLERANCE, NOW),
            Err(SignatureError::Stale)
        );
    }
    let other = sign(body, b"another-secret", NOW);
    assert_eq!(
        verify(&other, body, SECRET, TOLERANCE, NOW),
        Err(SignatureError::Mismatch)
    );
    if let Some((first, tail)) = body.split_first() {
        let mut altered = vec![first ^ 1];
        altered.extend_from_slice(tail);
        assert_eq!(
            verify(&sign(body, SECRET, NOW), &altered, SECRET, TOLERANCE, NOW),
            Err(SignatureError::Mismatch)
        );
    }
});
