//! The database layer: one connection type for SQLite, PostgreSQL and, with the build feature
//! `mysql`, MySQL / MariaDB (Diesel's `MultiConnection`), the pool, the embedded migrations, the one transaction helper and the
//! one way to run blocking database work from async code ([`run`]).
//!
//! Where things are: placement in [`orders`], every transition out of `pending` in
//! [`transitions`], the effect outbox (queue, apply, retry, dead letter) in [`outbox`], the
//! order-event outbox in [`journal`].
//!
//! Queries are written once against [`DbConnection`]; where the SQL must differ per backend
//! (`RETURNING`, `ON CONFLICT`), [`per_backend!`] runs the same Diesel code on each concrete
//! connection type, with a MySQL form of its own where MySQL's dialect differs ([`mysql`]).

pub mod catalog;
pub mod deliveries;
pub mod idempotency;
pub mod journal;
pub mod models;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "mysql")]
mod mysql_tls;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod provider_payments;
pub mod schedules;
pub mod schema;
pub mod sessions;
pub mod sql_types;
pub mod transitions;
pub mod writer;

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{Pool, PooledConnection, R2D2Connection};
use diesel::{Connection, PgConnection, QueryResult, RunQueryDsl, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::{DatabaseSettings, DatabaseUrl};
use writer::Turn;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgresql");
#[cfg(feature = "mysql")]
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
    #[cfg(feature = "mysql")]
    Mysql(diesel::MysqlConnection),
}

/// Runs the same Diesel code on the concrete connection inside a [`DbConnection`], for SQL that
/// the shared backend cannot express (`RETURNING`, `ON CONFLICT`, batch inserts). Where MySQL
/// needs other SQL (it has no `RETURNING`), its form follows: `per_backend!(conn, |c| ...,
/// mysql |m| ...)`; without one the same code runs on MySQL too.
#[macro_export]
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        $crate::per_backend!($conn, |$c| $body, mysql | $c | $body)
    };
    ($conn:expr, |$c:ident| $body:expr, mysql |$m:ident| $mysql:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgresql($c) => $body,
            $crate::db::DbConnection::Sqlite($c) => $body,
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql($m) => $mysql,
        }
    };
}

pub type DbPool = Pool<ConnectionManager>;
pub type PooledConn = PooledConnection<ConnectionManager>;

/// Every SQLite connection: enforce foreign keys, wait for the write lock instead of failing,
/// WAL so readers never block the writer, and FULL sync so a committed transaction survives
/// a power cut (a 2xx means durable).
const SQLITE_PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000; \
     PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;";

/// Opens connections for the pool from a [`DatabaseUrl`].
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    url: DatabaseUrl,
}

impl ConnectionManager {
    pub fn new(url: DatabaseUrl) -> Self {
        Self { url }
    }

    pub fn establish(&self) -> Result<DbConnection, diesel::r2d2::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                init_tls();
                let mut conn = PgConnection::establish(url)?;
                // Diesel binds every value and caches prepared statements; a generic plan made
                // while a table was small (or ignorant of which status is bound) can scan a
                // whole index per placement. Custom plans cost a short planning each time
                // (work found by key opts out: [`keyed_transaction`]).
                conn.batch_execute("SET plan_cache_mode = force_custom_plan")
                    .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Postgresql(conn))
            }
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_str().ok_or_else(|| {
                    diesel::r2d2::Error::ConnectionError(
                        diesel::ConnectionError::InvalidConnectionUrl(
                            "the SQLite path is not valid UTF-8".into(),
                        ),
                    )
                })?;
                let mut conn = SqliteConnection::establish(path)?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
            #[cfg(feature = "mysql")]
            DatabaseUrl::Mysql(url) => Ok(DbConnection::Mysql(mysql::establish(url)?)),
        }
    }
}

impl diesel::r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.establish()
    }

    fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_broken()
    }
}

/// Initialises OpenSSL (libpq's TLS) once per process, before any connection, without the
/// exit-time cleanup OpenSSL otherwise registers: that cleanup frees OpenSSL's state while
/// other threads (pooled connections closing, the engine's worker threads) may still use it,
/// and crashes the process on its way out. Call it before the first `PgConnection::establish`
/// of a process that does not go through [`ConnectionManager`].
pub fn init_tls() {
    openssl_sys::init();
}

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot create the folder of the SQLite file {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::r2d2::Error),
    #[error("cannot build the connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("migrations failed: {0}")]
    Migrate(String),
}

/// Creates the SQLite folder if needed, runs pending migrations and builds the pool.
pub fn connect(settings: &DatabaseSettings) -> Result<DbPool, DbSetupError> {
    if let DatabaseUrl::Sqlite(path) = &settings.url {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DbSetupError::CreateDir {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    let manager = ConnectionManager::new(settings.url.clone());
    migrate(&mut manager.establish()?)?;
    let pool = Pool::builder()
        .max_size(settings.pool_size)
        .connection_timeout(Duration::from_secs(5))
        .build(manager)?;
    Ok(pool)
}

/// Runs every pending migration of the connection's backend. On PostgreSQL an advisory lock,
/// on MySQL a named lock, keeps several engine processes starting at once from racing each
/// other.
pub fn migrate(conn: &mut DbConnection) -> Result<(), DbSetupError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| DbSetupError::Migrate(e.to_string());
    match conn {
        DbConnection::Postgresql(pg) => {
            const LOCK: &str = "SELECT pg_advisory_lock(7412004)";
            pg.batch_execute(LOCK).map_err(|e| err(e.into()))?;
            let result = pg.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ());
            pg.batch_execute("SELECT pg_advisory_unlock(7412004)")
                .map_err(|e| err(e.into()))?;
            result.map_err(err)
        }
        DbConnection::Sqlite(sqlite) => sqlite
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|_| ())
            .map_err(err),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(my) => {
            const LOCK: &str = "migrations";
            if !mysql::get_lock(my, LOCK, 3600).map_err(|e| err(e.into()))? {
                return Err(DbSetupError::Migrate(
                    "another process held the migration lock for an hour".into(),
                ));
            }
            let result = my.run_pending_migrations(MYSQL_MIGRATIONS).map(|_| ());
            mysql::release_lock(my, LOCK).map_err(|e| err(e.into()))?;
            result.map_err(err)
        }
    }
}

/// The planner settings of work found by key on PostgreSQL, until the transaction ends (the
/// `true` of `set_config`, as `SET LOCAL`): each statement's one cached generic plan, made
/// with index scans only. One statement, so also one round trip where it cannot travel with
/// the `BEGIN`.
macro_rules! by_key_settings {
    () => {
        "SELECT set_config('plan_cache_mode', 'force_generic_plan', true), \
         set_config('enable_seqscan', 'off', true)"
    };
}

/// How a [`keyed_transaction`] begins on PostgreSQL: its planner settings travel in the same
/// simple query as `BEGIN`, so they cost no round trip of their own.
const KEYED_BEGIN: &str = concat!("BEGIN; ", by_key_settings!());

/// Inside a [`write_transaction`]: the statements that follow find their rows by key, so on
/// PostgreSQL they (and the foreign-key checks PostgreSQL runs inside them) use the generic
/// plans of a [`keyed_transaction`] from here on. The placement reads the user's orders by
/// status first, planned for the values bound, and then switches (BENCHMARKS.md).
pub fn plan_by_key_from_here(conn: &mut DbConnection) -> QueryResult<()> {
    match conn {
        DbConnection::Postgresql(pg) => pg.batch_execute(by_key_settings!()),
        DbConnection::Sqlite(_) => Ok(()),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => Ok(()),
    }
}

/// [`write_transaction`] for work whose every statement finds its rows by key (the
/// transitions). On PostgreSQL its statements, and the foreign-key checks PostgreSQL runs
/// inside them, use each connection's one cached generic plan, made with index scans only,
/// instead of being planned at every execution as the connection's `force_custom_plan` has
/// them: a plan found by key is the right one whatever the tables held when it was made, and
/// re-planning each foreign-key check, row by row, cost a third of PostgreSQL's CPU in a
/// burst of timeouts (BENCHMARKS.md).
pub fn keyed_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    transaction(conn, true, Turn::Foreground, f)
}

/// [`keyed_transaction`] for the effect actors' work: on SQLite it lets the foreground
/// writers waiting with it go first ([`writer`]).
pub fn effect_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    transaction(conn, true, Turn::Background, f)
}

/// Runs `f` in one write transaction. On SQLite it begins with `BEGIN IMMEDIATE`, taking the
/// write lock up front, after waiting for this process's writer turn ([`writer`]); on
/// PostgreSQL it is a plain transaction, its statements planned for their values; on MySQL a
/// plain transaction too, run again from the start when InnoDB chose it as a deadlock's
/// victim (error 1213, which rolled it back), up to [`DEADLOCK_ATTEMPTS`] times.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    transaction(conn, false, Turn::Foreground, f)
}

/// How many times [`transaction`] runs a MySQL transaction that keeps losing deadlocks.
pub const DEADLOCK_ATTEMPTS: u32 = 5;

fn transaction<T, E, F>(conn: &mut DbConnection, keyed: bool, turn: Turn, mut f: F) -> Result<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    let (_writer, begin) = match conn {
        DbConnection::Postgresql(_) => (None, if keyed { KEYED_BEGIN } else { "BEGIN" }),
        DbConnection::Sqlite(_) => (Some(writer::enter(turn)), "BEGIN IMMEDIATE"),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => (None, "BEGIN"),
    };
    let mut attempt = 1;
    loop {
        #[cfg(feature = "mysql")]
        mysql::clear_deadlock();
        let result = transaction_once(conn, begin, &mut f);
        if run_again(conn, result.is_err(), &mut attempt)? {
            continue;
        }
        return result;
    }
}

/// After one run of a [`transaction`]: on MySQL, releases the named locks it took and tells
/// whether it lost a deadlock and may run again.
#[cfg(feature = "mysql")]
fn run_again(conn: &mut DbConnection, failed: bool, attempt: &mut u32) -> QueryResult<bool> {
    let DbConnection::Mysql(my) = conn else {
        return Ok(false);
    };
    mysql::release_transaction_locks(my)?;
    if failed && mysql::deadlocked() && *attempt < DEADLOCK_ATTEMPTS {
        *attempt += 1;
        log::debug!("a MySQL transaction lost a deadlock; attempt {attempt}");
        return Ok(true);
    }
    Ok(false)
}

#[cfg(not(feature = "mysql"))]
fn run_again(_: &mut DbConnection, _failed: bool, _attempt: &mut u32) -> QueryResult<bool> {
    Ok(false)
}

fn transaction_once<T, E, F>(conn: &mut DbConnection, begin: &str, f: &mut F) -> Result<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    // As Diesel's own `transaction` does (a failed COMMIT rolls back inside it).
    manage(conn, Manage::Begin(begin))?;
    match f(conn) {
        Ok(value) => {
            manage(conn, Manage::Commit)?;
            Ok(value)
        }
        Err(error) => match manage(conn, Manage::Rollback) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback_error) => Err(rollback_error.into()),
        },
    }
}

/// A step of [`transaction`]'s own transaction management, for Diesel's manager to keep count.
enum Manage<'a> {
    Begin(&'a str),
    Commit,
    Rollback,
}

fn manage(conn: &mut DbConnection, step: Manage) -> QueryResult<()> {
    fn on<C: Connection<TransactionManager = AnsiTransactionManager>>(
        c: &mut C,
        step: Manage,
    ) -> QueryResult<()> {
        match step {
            Manage::Begin(sql) => AnsiTransactionManager::begin_transaction_sql(c, sql),
            Manage::Commit => AnsiTransactionManager::commit_transaction(c),
            Manage::Rollback => AnsiTransactionManager::rollback_transaction(c),
        }
    }
    match conn {
        DbConnection::Postgresql(pg) => on(pg, step),
        DbConnection::Sqlite(sqlite) => on(sqlite, step),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(my) => on(my, step),
    }
}

/// Runs blocking Diesel work on the blocking thread pool, waiting at most `wait` for a pooled
/// connection (then 503 `unavailable`). The one way async code (HTTP handlers, actors) touches
/// the database.
pub async fn run<T, F>(pool: &DbPool, wait: Duration, f: F) -> Result<T, crate::error::ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConnection) -> Result<T, crate::error::ApiError> + Send + 'static,
{
    let pool = pool.clone();
    actix_web::rt::task::spawn_blocking(move || {
        let mut conn = pool.get_timeout(wait)?;
        f(&mut conn)
    })
    .await
    .map_err(|e| crate::error::ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// How [`lock_users`] locks: `FOR UPDATE` (their points change) or `FOR KEY SHARE` (rows
/// that reference them are inserted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserLock {
    Update,
    KeyShare,
}

/// Locks users' rows in id order before a transaction's inserts take the foreign keys'
/// key-share locks in their own order, which could deadlock with a concurrent batch
/// (PostgreSQL; SQLite's write transaction holds the whole database). MySQL's foreign-key
/// checks take shared locks, which conflict with a points update, so there both strengths
/// are `FOR UPDATE`.
pub fn lock_users(conn: &mut DbConnection, ids: &[i64], lock: UserLock) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt};
    let strength = match lock {
        UserLock::Update => "UPDATE",
        UserLock::KeyShare => "KEY SHARE",
    };
    if let DbConnection::Postgresql(pg) = conn {
        if !ids.is_empty() {
            diesel::sql_query(format!(
                "SELECT 1 FROM users WHERE id = ANY($1) ORDER BY id FOR {strength}"
            ))
            .bind::<Array<BigInt>, _>(ids)
            .execute(pg)?;
        }
    }
    #[cfg(feature = "mysql")]
    if let DbConnection::Mysql(my) = conn {
        use diesel::{ExpressionMethods, QueryDsl};
        use schema::users;
        if !ids.is_empty() {
            users::table
                .filter(users::id.eq_any(ids))
                .order(users::id)
                .select(users::id)
                .for_update()
                .load::<i64>(my)?;
        }
    }
    Ok(())
}

/// The distinct values, ascending.
pub fn sorted_unique(values: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut values: Vec<i64> = values.collect();
    values.sort_unstable();
    values.dedup();
    values
}
