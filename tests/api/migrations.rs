//! Every migration of both backends goes up, down and up again, and then all of them go down
//! and up: each `down.sql` must give back exactly the schema before its `up.sql` (columns with
//! their types, nullability and defaults, primary keys, indexes, UNIQUE, CHECK and foreign-key
//! constraints, sequences, views, triggers, functions), and a second up exactly the first's
//! schema. Then the SQLite and PostgreSQL migrations must make the same schema in Diesel's
//! terms (`catalog::Schema::portable`), the one that `src/db/schema.rs` describes for both
//! (`schema_rs.rs` checks that file against them). Built with the feature `mysql`, the MySQL
//! migrations do the same on the server at `TEST_MYSQL_URL`, and make PostgreSQL's schema but
//! for [`MYSQL_KNOWN_DIFFERENCES`], with the same CHECKs (`catalog::check_words`). MySQL runs DDL outside transactions: a migration there is
//! written to run again after it stopped half-way, which this test does not try.

use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use order_engine::db::{DbConnection, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

use crate::catalog::{self, Schema};
use crate::helpers::*;

/// The ways the SQLite migrations knowingly differ from the PostgreSQL ones, as
/// `Schema::differences` words them (SQLite first). The test fails on any other difference,
/// and on one of these that is gone (then take it out of this list).
pub const KNOWN_DIFFERENCES: &[&str] = &[
    // `order_no VARCHAR(64) PRIMARY KEY` without NOT NULL: SQLite, unlike the SQL standard,
    // lets a primary key that is not an INTEGER rowid hold NULL. The engine never writes one
    // (`schema.rs` says NOT NULL, from PostgreSQL); adding NOT NULL on SQLite means rebuilding
    // the orders table that every other table references.
    "orders.order_no: nullable: true on SQLite, false on PostgreSQL",
];

/// The ways the MySQL migrations knowingly differ from the PostgreSQL ones: all of them
/// indexes, each group the MySQL indexes that do the PostgreSQL ones' job. The test fails on
/// any other difference, and on one of these that is gone (then take it out of this list).
#[cfg(feature = "mysql")]
const MYSQL_KNOWN_DIFFERENCES: &[SameJob] = &[
    // MySQL has no partial indexes (migrations/mysql/2026-11-26-000001_create_platform/up.sql
    // says so first): each partial index of PostgreSQL is, under the same name, an index led
    // by the column its predicate tests, then PostgreSQL's key columns.
    SameJob {
        table: "orders",
        mysql: &[plain("orders_pending_expiry", &["status", "expires_at"])],
        postgres: &[partial("orders_pending_expiry", &["expires_at"])],
    },
    SameJob {
        table: "orders",
        mysql: &[plain("orders_pending_owner", &["status", "owner_node"])],
        postgres: &[partial("orders_pending_owner", &["owner_node"])],
    },
    SameJob {
        table: "payment_events",
        mysql: &[plain("payment_events_refund_required", &["outcome", "id"])],
        postgres: &[partial("payment_events_refund_required", &["id"])],
    },
    SameJob {
        table: "effects",
        mysql: &[plain("effects_due", &["status", "next_attempt_at"])],
        postgres: &[partial("effects_due", &["next_attempt_at"])],
    },
    // PostgreSQL's two partial indexes of effects by status (pending, dead_lettered) are one
    // index on MySQL (migrations/mysql/2026-11-26-000003_effect_status_indexes).
    SameJob {
        table: "effects",
        mysql: &[plain("effects_status_id", &["status", "id"])],
        postgres: &[
            partial("effects_dead_lettered_id", &["id"]),
            partial("effects_pending_id", &["id"]),
        ],
    },
    SameJob {
        table: "order_events",
        mysql: &[plain("order_events_unfanned", &["fanned_out", "id"])],
        postgres: &[partial("order_events_unfanned", &["id"])],
    },
    // Not led by status: an endpoint's deliveries of every status, each order's oldest first
    // (its claim checks for an earlier pending event of the order among them).
    SameJob {
        table: "webhook_deliveries",
        mysql: &[plain(
            "webhook_deliveries_pending",
            &["url", "order_no", "event_id"],
        )],
        postgres: &[partial(
            "webhook_deliveries_pending",
            &["url", "order_no", "event_id"],
        )],
    },
    SameJob {
        table: "schedule_runs",
        mysql: &[plain("schedule_runs_running", &["name", "status"])],
        postgres: &[partial("schedule_runs_running", &["name"])],
    },
    SameJob {
        table: "payments",
        mysql: &[plain("payments_started", &["status", "created_at"])],
        postgres: &[partial("payments_started", &["created_at"])],
    },
    // The same uniqueness: PostgreSQL's is a UNIQUE constraint (whose index the portable
    // schema does not name), MySQL's a unique index the migration names, and its down.sql
    // drops by that name. MySQL has no UNIQUE constraint apart from its index.
    SameJob {
        table: "payment_events",
        mysql: &[KnownIndex {
            unique: true,
            ..plain(
                "payment_events_provider_trade_no",
                &["provider", "trade_no"],
            )
        }],
        postgres: &[KnownIndex {
            name: None,
            columns: &["provider", "trade_no"],
            unique: true,
            partial: false,
        }],
    },
];

/// Indexes of one table that do on MySQL what other ones do on PostgreSQL.
#[cfg(feature = "mysql")]
struct SameJob {
    table: &'static str,
    mysql: &'static [KnownIndex],
    postgres: &'static [KnownIndex],
}

/// A `catalog::Index` of the portable schema.
#[cfg(feature = "mysql")]
struct KnownIndex {
    name: Option<&'static str>,
    columns: &'static [&'static str],
    unique: bool,
    partial: bool,
}

#[cfg(feature = "mysql")]
const fn plain(name: &'static str, columns: &'static [&'static str]) -> KnownIndex {
    KnownIndex {
        name: Some(name),
        columns,
        unique: false,
        partial: false,
    }
}

#[cfg(feature = "mysql")]
const fn partial(name: &'static str, columns: &'static [&'static str]) -> KnownIndex {
    KnownIndex {
        partial: true,
        ..plain(name, columns)
    }
}

#[cfg(feature = "mysql")]
impl SameJob {
    /// The lines of `Schema::differences` (MySQL first, then PostgreSQL) this group explains.
    fn differences(&self) -> Vec<String> {
        let line = |index: &KnownIndex, side: &str| {
            let index = catalog::Index {
                name: index.name.map(str::to_string),
                columns: index.columns.iter().map(|c| c.to_string()).collect(),
                unique: index.unique,
                partial: index.partial,
                definition: String::new(),
                backs_foreign_key: false,
            };
            format!("{}: index {index:?}: only on {side}", self.table)
        };
        let mysql = self.mysql.iter().map(|i| line(i, "MySQL"));
        mysql
            .chain(self.postgres.iter().map(|i| line(i, "PostgreSQL")))
            .collect()
    }
}

/// Runs `$body` with `$c` the concrete connection and the const `$m` its backend's migrations.
macro_rules! with_migrations {
    ($conn:expr, |$c:ident, $m:ident| $body:expr) => {
        match $conn {
            DbConnection::Postgresql($c) => {
                const $m: EmbeddedMigrations = POSTGRES_MIGRATIONS;
                $body
            }
            DbConnection::Sqlite($c) => {
                const $m: EmbeddedMigrations = SQLITE_MIGRATIONS;
                $body
            }
            #[cfg(feature = "mysql")]
            DbConnection::Mysql($c) => {
                const $m: EmbeddedMigrations = order_engine::db::MYSQL_MIGRATIONS;
                $body
            }
        }
    };
}

/// Runs the next pending migration and names it; `None` when none is pending.
fn run_next(conn: &mut DbConnection) -> Option<String> {
    with_migrations!(conn, |c, MIGRATIONS| {
        let pending = c
            .has_pending_migration(MIGRATIONS)
            .expect("list pending migrations");
        pending.then(|| {
            c.run_next_migration(MIGRATIONS)
                .expect("migrate up")
                .to_string()
        })
    })
}

fn revert_last(conn: &mut DbConnection) {
    with_migrations!(conn, |c, MIGRATIONS| {
        c.revert_last_migration(MIGRATIONS).map(|_| ())
    })
    .expect("migrate down");
}

fn up_all(conn: &mut DbConnection) {
    with_migrations!(conn, |c, MIGRATIONS| {
        c.run_pending_migrations(MIGRATIONS).map(|_| ())
    })
    .expect("migrate up");
}

fn down_all(conn: &mut DbConnection) {
    with_migrations!(conn, |c, MIGRATIONS| {
        c.revert_all_migrations(MIGRATIONS).map(|_| ())
    })
    .expect("migrate down");
}

#[track_caller]
fn assert_same(expected: &Schema, conn: &mut DbConnection, what: &str) {
    let changed = expected.differences("the expected schema", &catalog::read(conn), "the database");
    assert!(changed.is_empty(), "{what}:\n{}", changed.join("\n"));
}

/// Each migration in turn goes up, down (back to exactly the schema before it) and up again
/// (exactly the schema of its first up); then all of them go down (nothing left) and up again.
/// Returns the final schema.
fn up_down_up(conn: &mut DbConnection, backend: &str) -> Schema {
    let mut before = catalog::read(conn);
    assert!(
        before.is_empty(),
        "{backend}: the new database is not empty"
    );
    while let Some(migration) = run_next(conn) {
        let after = catalog::read(conn);
        revert_last(conn);
        assert_same(
            &before,
            conn,
            &format!("{backend}: down.sql of {migration} does not undo its up.sql"),
        );
        assert_eq!(run_next(conn).as_ref(), Some(&migration));
        assert_same(
            &after,
            conn,
            &format!("{backend}: {migration} up -> down -> up changed the schema"),
        );
        before = after;
    }
    assert!(
        !before.tables.is_empty(),
        "{backend}: the migrations made no table"
    );
    down_all(conn);
    assert_same(
        &Schema::default(),
        conn,
        &format!("{backend}: reverting every migration left these behind"),
    );
    up_all(conn);
    assert_same(
        &before,
        conn,
        &format!("{backend}: all the way down and up again changed the schema"),
    );
    before
}

#[test]
fn migrations_go_up_down_and_up_on_both_backends_alike() {
    let sqlite_db = TestDatabase::create(Backend::Sqlite).expect("SQLite");
    let sqlite = up_down_up(&mut sqlite_db.connect(), "SQLite");
    let Some(pg_db) = TestDatabase::create(Backend::Postgres) else {
        return;
    };
    let postgres = up_down_up(&mut pg_db.connect(), "PostgreSQL");
    assert_only_known_differences(
        sqlite
            .portable()
            .differences("SQLite", &postgres.portable(), "PostgreSQL"),
        "the SQLite and PostgreSQL migrations differ",
    );
}

/// The MySQL migrations go up, down and up as the others do, and make PostgreSQL's schema in
/// Diesel's terms but for [`MYSQL_KNOWN_DIFFERENCES`] (without `TEST_DATABASE_URL`, only the
/// first part runs).
#[cfg(feature = "mysql")]
#[test]
fn mysql_migrations_go_up_down_and_up() {
    let Some(mysql_db) = TestDatabase::create(Backend::Mysql) else {
        return;
    };
    let mysql = up_down_up(&mut mysql_db.connect(), "MySQL");
    let Some(pg_db) = TestDatabase::create(Backend::Postgres) else {
        return;
    };
    let mut pg = pg_db.connect();
    up_all(&mut pg);
    let postgres = catalog::read(&mut pg);
    let known: Vec<String> = MYSQL_KNOWN_DIFFERENCES
        .iter()
        .flat_map(SameJob::differences)
        .collect();
    assert_only_listed_differences(
        mysql
            .portable()
            .differences("MySQL", &postgres.portable(), "PostgreSQL"),
        &known.iter().map(String::as_str).collect::<Vec<_>>(),
        "MYSQL_KNOWN_DIFFERENCES in tests/api/migrations.rs",
        "the MySQL and PostgreSQL migrations differ",
    );
    // The portable schema leaves CHECKs out (SQLite keeps them only in its CREATE TABLE
    // text); MySQL and PostgreSQL keep each apart, so their words are compared.
    let (mysql_checks, postgres_checks) = (mysql.check_words(), postgres.check_words());
    let mut differences = Vec::new();
    for (table, checks) in &mysql_checks {
        let theirs = postgres_checks.get(table).cloned().unwrap_or_default();
        for check in checks.difference(&theirs) {
            differences.push(format!(
                "{table}: CHECK with words {check:?}: only on MySQL"
            ));
        }
        for check in theirs.difference(checks) {
            differences.push(format!(
                "{table}: CHECK with words {check:?}: only on PostgreSQL"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the MySQL and PostgreSQL migrations' CHECKs differ:\n{}",
        differences.join("\n")
    );
}

/// Fails with `what` and each difference not in [`KNOWN_DIFFERENCES`], and on a known one not
/// found (it was fixed: take it out of the list).
#[track_caller]
pub fn assert_only_known_differences(differences: Vec<String>, what: &str) {
    assert_only_listed_differences(
        differences,
        KNOWN_DIFFERENCES,
        "KNOWN_DIFFERENCES in tests/api/migrations.rs",
        what,
    );
}

/// Fails with `what` and each difference not in `known` (the list named `list`), and on a
/// known one not found (it was fixed: take it out of the list).
#[track_caller]
pub fn assert_only_listed_differences(
    differences: Vec<String>,
    known: &[&str],
    list: &str,
    what: &str,
) {
    let unexpected: Vec<&str> = differences
        .iter()
        .map(String::as_str)
        .filter(|d| !known.contains(d))
        .collect();
    let gone: Vec<&str> = known
        .iter()
        .copied()
        .filter(|known| !differences.iter().any(|d| d == known))
        .collect();
    assert!(unexpected.is_empty(), "{what}:\n{}", unexpected.join("\n"));
    assert!(
        gone.is_empty(),
        "known differences no longer found, to take out of {list}: {gone:?}"
    );
}
