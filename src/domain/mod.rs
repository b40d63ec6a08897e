//! Pure business rules: no I/O. Money ([`pricing`]: a placement's shape checks and its
//! price), the order state machine ([`order`]), every stored state as a typed enum
//! ([`states`]), ids that must not be mixed up ([`ids`]) and the engine's timestamps
//! ([`time`]).

pub mod ids;
pub mod order;
pub mod pricing;
pub mod schedule;
pub mod states;
pub mod time;

/// A positive integer written the one way this engine writes ids (`^[1-9][0-9]*$`, within
/// `i64`): not `"01"`, `"+1"`, `" 1"` or `"1.0"`, which `str::parse` would take or a client could
/// mean differently.
pub fn canonical_id(text: &str) -> Option<i64> {
    let first = text.bytes().next()?;
    if !(b'1'..=b'9').contains(&first) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_ids() {
        use super::canonical_id;
        assert_eq!(canonical_id("1"), Some(1));
        assert_eq!(canonical_id("120"), Some(120));
        assert_eq!(canonical_id("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "1e0",
            "0x1",
            "\u{0661}",
            "9223372036854775808",
        ] {
            assert_eq!(canonical_id(bad), None, "{bad:?}");
        }
    }
}
