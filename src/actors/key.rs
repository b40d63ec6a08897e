//! [`OrderKey`]: an order number as the actors hold it. A million pending orders each keep
//! their number twice (the supervisor's map and the actor), so the form matters: the 32 hex
//! digits the engine makes (`domain::order::new_order_no`) are kept as their 16 bytes, inline
//! and without an allocation; any other text a database may hold is kept as it is.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderKey {
    /// A lowercase simple UUID, as its bytes.
    Uuid([u8; 16]),
    /// Any other order number.
    Text(Box<str>),
}

impl OrderKey {
    pub fn new(order_no: &str) -> Self {
        let canonical = order_no.len() == 32
            && order_no
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match uuid::Uuid::try_parse(order_no) {
            Ok(uuid) if canonical => OrderKey::Uuid(uuid.into_bytes()),
            _ => OrderKey::Text(order_no.into()),
        }
    }
}

impl From<&str> for OrderKey {
    fn from(order_no: &str) -> Self {
        OrderKey::new(order_no)
    }
}

/// Writes the order number back exactly as it was given.
impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderKey::Uuid(bytes) => {
                let mut buf = uuid::Uuid::encode_buffer();
                f.write_str(
                    uuid::Uuid::from_bytes(*bytes)
                        .simple()
                        .encode_lower(&mut buf),
                )
            }
            OrderKey::Text(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_round_trip_through_keys() {
        let made = crate::domain::order::new_order_no(&crate::domain::time::now());
        for (no, compact) in [
            (made.as_str(), true),
            ("0123456789abcdef0123456789abcdef", true),
            // Not the engine's form: kept as text, exactly as given.
            ("0123456789ABCDEF0123456789ABCDEF", false),
            ("01234567-89ab-cdef-0123-456789abcdef", false),
            ("order-1", false),
            ("", false),
        ] {
            let key = OrderKey::new(no);
            assert_eq!(key.to_string(), no);
            assert_eq!(matches!(key, OrderKey::Uuid(_)), compact, "{no}");
        }
        assert_eq!(std::mem::size_of::<OrderKey>(), 24);
    }
}
