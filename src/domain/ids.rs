//! Ids as newtypes, where a mix-up is possible: a user id is never a course id, and an order
//! number is not any string. Each is stored and shown as the value it wraps.

use std::fmt;

use diesel_derive_newtype::DieselNewType;
use serde::{Deserialize, Serialize};

/// A user's id (positive).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    DieselNewType,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = i64)]
pub struct UserId(pub i64);

/// A course's id (positive).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    DieselNewType,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = i64)]
pub struct CourseId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for CourseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An order number: an opaque, unique string of 6-32 letters, digits and `_` (SPEC "Order";
/// the engine makes 32-hex-digit ones, `domain::order::new_order_no`).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    DieselNewType,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_]{6,32}$")]
pub struct OrderNo(pub String);

impl OrderNo {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for OrderNo {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for OrderNo {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<String> for OrderNo {
    fn from(text: String) -> Self {
        OrderNo(text)
    }
}

impl From<&str> for OrderNo {
    fn from(text: &str) -> Self {
        OrderNo(text.to_string())
    }
}

impl PartialEq<str> for OrderNo {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}
