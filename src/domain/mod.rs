//! Pure business rules: no I/O. Pricing, request validation, order states and timestamps.

pub mod order;
pub mod placement;
pub mod time;
