//! The migrations of both backends go up, all the way down, and up again, leaving the same
//! tables and columns: `down.sql` is real, and the SQLite and PostgreSQL migrations create the
//! same schema (the one `src/db/schema.rs` describes).

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::MigrationHarness;
use order_engine::db::{DbConnection, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

use crate::helpers::*;

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

/// Every (table, column) of the engine's schema, sorted.
fn columns(conn: &mut DbConnection) -> Vec<Column> {
    let sql = match conn {
        DbConnection::Postgresql(_) => {
            "SELECT table_name::text AS table_name, column_name::text AS column_name \
             FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'"
        }
        DbConnection::Sqlite(_) => {
            "SELECT m.name AS table_name, p.name AS column_name \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
             AND m.name <> '__diesel_schema_migrations'"
        }
    };
    let mut found: Vec<Column> = diesel::sql_query(sql).load(conn).expect("read the schema");
    found.sort();
    found
}

fn up_down_up(conn: &mut DbConnection) -> Vec<Column> {
    let run = |conn: &mut DbConnection| match conn {
        DbConnection::Postgresql(pg) => pg.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ()),
        DbConnection::Sqlite(sqlite) => {
            sqlite.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ())
        }
    };
    run(conn).expect("migrate up");
    let first = columns(conn);
    assert!(!first.is_empty());
    match conn {
        DbConnection::Postgresql(pg) => pg.revert_all_migrations(POSTGRES_MIGRATIONS).map(|_| ()),
        DbConnection::Sqlite(sqlite) => sqlite.revert_all_migrations(SQLITE_MIGRATIONS).map(|_| ()),
    }
    .expect("migrate down");
    assert_eq!(columns(conn), Vec::new(), "down.sql left tables behind");
    run(conn).expect("migrate up again");
    let again = columns(conn);
    assert_eq!(again, first, "up -> down -> up changed the schema");
    again
}

#[test]
fn migrations_go_up_down_and_up_on_both_backends_alike() {
    let sqlite_db = TestDatabase::create(Backend::Sqlite).expect("SQLite");
    let sqlite = up_down_up(&mut sqlite_db.connect());
    let Some(pg_db) = TestDatabase::create(Backend::Postgres) else {
        return;
    };
    let postgres = up_down_up(&mut pg_db.connect());
    assert_eq!(
        sqlite, postgres,
        "the SQLite and PostgreSQL migrations differ"
    );
}
