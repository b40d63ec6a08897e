//! What only the MySQL / MariaDB backend needs (build feature `mysql`): its connection set-up,
//! the deadlock watch behind [`super::transaction`]'s retry, the id of a row just inserted
//! (Diesel's MySQL backend has no `RETURNING`) and the named locks that stand in for
//! PostgreSQL's advisory locks.

use std::cell::Cell;

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::result::{DatabaseErrorKind, Error};
use diesel::sql_types::{BigInt, Nullable};
use diesel::{Connection, MysqlConnection, QueryResult, RunQueryDsl};

use crate::config::{MysqlSslMode, MysqlUrl};

/// Opens a connection with the URL's TLS settings (a connection that must use TLS and does
/// not is an error, whatever the client library did): transactions READ COMMITTED, as on
/// PostgreSQL (InnoDB's default, REPEATABLE READ, takes gap locks that deadlock concurrent
/// placements), and the deadlock watch. Diesel itself sets the session's time zone to UTC and
/// its character set to utf8mb4.
pub fn establish(url: &MysqlUrl) -> Result<MysqlConnection, diesel::r2d2::Error> {
    let mut conn = match url.ssl_mode {
        None => MysqlConnection::establish(&url.url)?,
        Some(mode) if super::mysql_tls::LIBRARY_READS_SSL_MODE => {
            let separator = if url.url.contains('?') { '&' } else { '?' };
            MysqlConnection::establish(&format!(
                "{}{separator}ssl_mode={}",
                url.url,
                mode.as_str()
            ))?
        }
        Some(mode) => {
            super::mysql_tls::with_ssl_mode(mode, || MysqlConnection::establish(&url.url))
                .map_err(connection_error)??
        }
    };
    if url.ssl_mode.is_some_and(MysqlSslMode::requires_tls) {
        let cipher = diesel::sql_query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .get_result::<Status>(&mut conn)
            .map_err(diesel::r2d2::Error::QueryError)?;
        if cipher.value.is_empty() {
            return Err(connection_error(
                "ssl-mode requires TLS, but the connection is not encrypted".into(),
            ));
        }
    }
    conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .map_err(diesel::r2d2::Error::QueryError)?;
    conn.set_instrumentation(DeadlockWatch);
    Ok(conn)
}

fn connection_error(reason: String) -> diesel::r2d2::Error {
    diesel::r2d2::Error::ConnectionError(diesel::ConnectionError::BadConnection(reason))
}

#[derive(diesel::QueryableByName)]
struct Status {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
    value: String,
}

thread_local! {
    /// Whether a statement on this thread failed with InnoDB's deadlock error (1213) since the
    /// last [`clear_deadlock`]. A connection runs its statements on the thread that holds it.
    static DEADLOCKED: Cell<bool> = const { Cell::new(false) };
}

/// Diesel reports error 1213 as `SerializationFailure` (and InnoDB has rolled the whole
/// transaction back by then); whatever error type the transaction's closure turns it into,
/// this notes it for the retry.
struct DeadlockWatch;

impl Instrumentation for DeadlockWatch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery {
            error: Some(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)),
            ..
        } = event
        {
            DEADLOCKED.with(|d| d.set(true));
        }
    }
}

pub fn clear_deadlock() {
    DEADLOCKED.with(|d| d.set(false));
}

/// Whether a statement deadlocked since [`clear_deadlock`].
pub fn deadlocked() -> bool {
    DEADLOCKED.with(Cell::get)
}

/// The `AUTO_INCREMENT` id of the row this connection inserted last (the first row of a
/// multi-row insert).
pub fn last_insert_id(conn: &mut MysqlConnection) -> QueryResult<i64> {
    diesel::select(diesel::dsl::sql::<BigInt>(
        "CAST(LAST_INSERT_ID() AS SIGNED)",
    ))
    .get_result(conn)
}

/// Takes the named lock `name` of this database (names are server-wide, so the database's
/// name is part of it), waiting at most `wait_secs`; `false` when another session holds it.
/// It lasts until [`release_lock`] or the session's end, not the transaction's.
pub fn get_lock(conn: &mut MysqlConnection, name: &str, wait_secs: i64) -> QueryResult<bool> {
    let got: Option<i64> =
        diesel::sql_query("SELECT CAST(GET_LOCK(CONCAT(DATABASE(), '.', ?), ?) AS SIGNED) AS got")
            .bind::<diesel::sql_types::Text, _>(name)
            .bind::<BigInt, _>(wait_secs)
            .get_result::<Got>(conn)?
            .got;
    Ok(got == Some(1))
}

pub fn release_lock(conn: &mut MysqlConnection, name: &str) -> QueryResult<()> {
    diesel::sql_query("DO RELEASE_LOCK(CONCAT(DATABASE(), '.', ?))")
        .bind::<diesel::sql_types::Text, _>(name)
        .execute(conn)
        .map(|_| ())
}

#[derive(diesel::QueryableByName)]
struct Got {
    #[diesel(sql_type = Nullable<BigInt>)]
    got: Option<i64>,
}

thread_local! {
    /// The named locks [`lock_for_transaction`] took in the transaction under way on this
    /// thread, released by [`release_transaction_locks`] when it ends.
    static TRANSACTION_LOCKS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// PostgreSQL's `pg_try_advisory_xact_lock`: the named lock `name` without waiting, held
/// until the [`super::transaction`] it is taken in ends.
pub fn lock_for_transaction(conn: &mut MysqlConnection, name: &str) -> QueryResult<bool> {
    let got = get_lock(conn, name, 0)?;
    if got {
        TRANSACTION_LOCKS.with(|held| held.borrow_mut().push(name.to_string()));
    }
    Ok(got)
}

/// Releases what [`lock_for_transaction`] took (called once the transaction has ended).
pub fn release_transaction_locks(conn: &mut MysqlConnection) -> QueryResult<()> {
    let held = TRANSACTION_LOCKS.with(|held| std::mem::take(&mut *held.borrow_mut()));
    for name in held {
        release_lock(conn, &name)?;
    }
    Ok(())
}
