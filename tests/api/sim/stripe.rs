//! To be written: the stripe simulator (see super::Simulator).
