//! Pure business rules: no I/O. Money ([`pricing`]: a placement's shape checks and its
//! price), the order state machine ([`order`]), every stored state as a typed enum
//! ([`states`]), ids that must not be mixed up ([`ids`]) and the engine's timestamps
//! ([`time`]).

pub mod ids;
pub mod order;
pub mod pricing;
pub mod states;
pub mod time;
