//! order-engine: the order lifecycle engine of an online course platform.
//!
//! Layout: [`config`] (settings), [`db`] (schema, models, queries), [`domain`] (pure rules),
//! [`http`] (routes by user), [`auth`], [`error`] (the one API error type), [`app`] (start-up)
//! and [`cli`] (the command line).

pub mod actors;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod redis_link;
pub mod seed;
