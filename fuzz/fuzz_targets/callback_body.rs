//! Arbitrary bytes as a payment callback body for `parse_callback`: it never panics, and a
//! body it accepts is a JSON object (SPEC: the bodies are objects) with a 1-64 character
//! trade_no, an amount >= 0 and an order_no of 1-64 characters (others are 404).
//!
//! `FUZZ_ALLOW_ARRAY_BODIES=1` skips the object check, so that a run can go on past the
//! known array-body bug (a JSON array of the field values is accepted).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use order_engine::http::provider::parse_callback;

fn allow_arrays() -> bool {
    static ALLOW: OnceLock<bool> = OnceLock::new();
    *ALLOW.get_or_init(|| std::env::var_os("FUZZ_ALLOW_ARRAY_BODIES").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Ok((order_no, callback)) = parse_callback(data) else {
        return;
    };
    let trade_chars = callback.trade_no.chars().count();
    assert!((1..=64).contains(&trade_chars), "{callback:?}");
    assert!(callback.amount_cents >= 0, "{callback:?}");
    assert!((1..=64).contains(&order_no.chars().count()), "{order_no:?}");
    if !allow_arrays() {
        let object = serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|v| v.is_object());
        assert!(
            object,
            "a body that is not a JSON object was accepted: {:?}",
            String::from_utf8_lossy(data)
        );
    }
});
