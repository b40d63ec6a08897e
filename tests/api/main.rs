//! The HTTP API tests: one binary, the real engine on a random port, SQLite always and
//! PostgreSQL when TEST_DATABASE_URL is set.

mod catalog;
#[allow(dead_code)]
mod helpers;
mod invariants;

mod callbacks;
mod concurrency;
mod config_errors;
mod crash_loop;
mod dashboard;
mod dead_letter;
mod errors;
mod hostile;
mod idempotency;
mod lifecycle;
mod lists;
mod metrics;
mod migrations;
#[cfg(feature = "mysql")]
mod mysql_server;
#[cfg(feature = "mysql")]
mod mysql_tls;
mod openapi;
mod outage;
mod payments;
mod pg_cluster;
mod placement;
mod process;
mod provider_stories;
mod redis;
mod restart;
mod schedules;
mod schema_rs;
mod schemathesis;
#[allow(dead_code)]
mod sim;
mod smoke;
mod timeouts;
mod tls;
mod webhooks;
