//! order-engine: the order lifecycle engine of an online course platform.
//!
//! Layout: [`config`] (settings), [`domain`] (pure rules: money, the order state machine,
//! typed states), [`db`] (schema, models, queries, the transition and the outboxes),
//! [`actors`] (order actors, their deadline timers, effect actors), [`redis`] (event stream,
//! cluster, fast path), [`webhooks`] (order events POSTed to endpoints), [`http`] (routes by user), [`auth`], [`error`] (the one API error
//! type), [`app`] (start-up) and [`cli`] (the command line). ARCHITECTURE.md follows an order
//! through them.

pub mod actors;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod providers;
pub mod redis;
pub mod schedules;
pub mod seed;
pub mod webhooks;
