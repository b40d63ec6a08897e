//! To be written: the alipay simulator (see super::Simulator).
