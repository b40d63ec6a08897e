//! To be written: the wechatpay simulator (see super::Simulator).
