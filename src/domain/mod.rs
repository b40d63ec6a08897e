//! Pure business rules: no I/O. Money ([`pricing`]: a placement's shape checks and its
//! price), the order state machine ([`order`]), every stored state as a typed enum
//! ([`states`]) and the engine's timestamps ([`time`]).

pub mod order;
pub mod pricing;
pub mod states;
pub mod time;
