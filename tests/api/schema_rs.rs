//! `src/db/schema.rs` is what `diesel print-schema` makes of the migrations with diesel.toml's
//! settings, never a hand edit: the installed diesel CLI prints the schema of a freshly
//! migrated PostgreSQL database, which must be schema.rs to the byte, and of a freshly migrated
//! SQLite file, whose tables, primary keys and columns (by name, with their Diesel types in
//! backend-neutral names, and nullability) must be schema.rs's. Built with the feature
//! `mysql`, the same holds for the MySQL migrations, read from the server's catalog (the diesel
//! CLI that CI installs has no MySQL support; `catalog.rs` maps MySQL's types by its rules).
//!
//! The PostgreSQL and SQLite check needs `diesel` on the PATH (`.ci/run` installs it; the README says how). Without it the
//! test prints one `skipped: schema.rs check (diesel CLI not installed)` line, and under CI it
//! fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use crate::catalog::{self, neutral_type, Column, Schema, Table};
use crate::helpers::*;
use crate::migrations::assert_only_known_differences;
#[cfg(feature = "mysql")]
use crate::migrations::assert_only_listed_differences;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `diesel -V` (`diesel 2.3.14`), or `None` (after the skip line) when it is not installed.
fn diesel_cli() -> Option<String> {
    match Command::new("diesel").arg("-V").output() {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => panic!(
            "`diesel -V` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            static SKIP: Once = Once::new();
            skip_or_fail_under_ci("schema.rs check (diesel CLI not installed)", &SKIP);
            None
        }
        Err(e) => panic!("cannot run the diesel CLI: {e}"),
    }
}

/// `diesel print-schema` of the database at `url`, with the repository's diesel.toml.
fn print_schema(url: &str, extra_args: &[&str]) -> String {
    let out = Command::new("diesel")
        .current_dir(repository())
        .args(["print-schema", "--database-url", url, "--config-file"])
        .arg(repository().join("diesel.toml"))
        .args(extra_args)
        .output()
        .expect("run diesel print-schema");
    assert!(
        out.status.success(),
        "diesel print-schema --database-url {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("print-schema prints UTF-8")
}

/// The tables of a schema.rs-shaped text (`diesel::table!` blocks, their `use` lines skipped):
/// primary key and columns
/// with their Diesel types in backend-neutral names, columns sorted by name; nothing else
/// (`Schema::differences` words what differs).
fn tables_of(schema_rs: &str) -> Schema {
    let mut schema = Schema::default();
    let mut lines = schema_rs.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line != "diesel::table! {" {
            continue;
        }
        let mut body = lines.by_ref().take_while(|l| *l != "}").filter(|l| {
            !l.starts_with("#[") && !l.starts_with("//") && !l.starts_with("use ") && !l.is_empty()
        });
        let header = body.next().expect("a table! block names its table");
        let (name, key) = header
            .trim_end_matches('{')
            .trim()
            .split_once(' ')
            .expect("`name (key) {`");
        let mut table = Table {
            primary_key: key
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .map(|k| k.trim().to_string())
                .collect(),
            ..Table::default()
        };
        for column in body {
            let (column, sql_type) = column
                .trim_end_matches(',')
                .split_once(" -> ")
                .unwrap_or_else(|| panic!("a column line: {column}"));
            let sql_type = neutral_type(sql_type);
            let inner = sql_type
                .strip_prefix("Nullable<")
                .and_then(|t| t.strip_suffix('>'));
            table.columns.push(Column {
                name: column.to_string(),
                declared_type: String::new(),
                diesel_type: inner.unwrap_or(&sql_type).to_string(),
                nullable: inner.is_some(),
                default: None,
                generated: None,
            });
        }
        table.columns.sort_by(|a, b| a.name.cmp(&b.name));
        schema.tables.insert(name.to_string(), table);
    }
    schema
}

/// Where the two texts part, with a few lines of each from there.
fn first_difference(expected: &str, found: &str) -> String {
    let (expected, found): (Vec<&str>, Vec<&str>) =
        (expected.lines().collect(), found.lines().collect());
    let at = expected
        .iter()
        .zip(&found)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(found.len()));
    let excerpt = |lines: &[&str]| {
        lines
            .iter()
            .skip(at)
            .take(8)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "from line {}:\n--- src/db/schema.rs\n{}\n--- diesel print-schema\n{}",
        at + 1,
        excerpt(&expected),
        excerpt(&found)
    )
}

#[test]
fn schema_rs_is_what_diesel_print_schema_gives() {
    let Some(version) = diesel_cli() else {
        return;
    };
    let schema_rs_path = repository().join("src/db/schema.rs");
    let schema_rs = std::fs::read_to_string(&schema_rs_path).expect("read src/db/schema.rs");

    // SQLite: the same tables, keys and columns, in Diesel's backend-neutral types.
    let sqlite_db = TestDatabase::create(Backend::Sqlite).expect("SQLite");
    let mut sqlite = sqlite_db.connect();
    order_engine::db::migrate(&mut sqlite).expect("migrate SQLite");
    let path = sqlite_db.url.trim_start_matches("sqlite://");
    let mut printed = tables_of(&print_schema(
        path,
        &["--sqlite-integer-primary-key-is-bigint"],
    ));
    // print-schema reads SQLite's NOT NULL flag, which a rowid alias (`INTEGER PRIMARY KEY`)
    // lacks although it can never be NULL.
    for (name, table) in catalog::read(&mut sqlite).tables {
        for column in table.columns.iter().filter(|c| c.generated.is_some()) {
            if let Some(printed) = printed
                .tables
                .get_mut(&name)
                .and_then(|t| t.columns.iter_mut().find(|c| c.name == column.name))
            {
                printed.nullable = column.nullable;
            }
        }
    }
    assert_only_known_differences(
        printed.differences("SQLite", &tables_of(&schema_rs), "PostgreSQL"),
        &format!(
            "diesel print-schema on the SQLite migrations ({version}) and src/db/schema.rs \
             (PostgreSQL's) differ"
        ),
    );

    // PostgreSQL: schema.rs to the byte.
    let Some(pg_db) = TestDatabase::create(Backend::Postgres) else {
        return;
    };
    order_engine::db::migrate(&mut pg_db.connect()).expect("migrate PostgreSQL");
    let generated = print_schema(&pg_db.url, &[]);
    if generated != schema_rs {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("print-schema.rs");
        let _ = std::fs::write(&kept, &generated);
        panic!(
            "src/db/schema.rs is not what `diesel print-schema` gives for the PostgreSQL \
             migrations ({version}; .ci/run pins the version to use). Regenerate it as the \
             README says, never by hand; the output is in {}. {}",
            kept.display(),
            first_difference(&schema_rs, &generated)
        );
    }
}

/// The ways the MySQL migrations' tables knowingly differ from schema.rs, as
/// `Schema::differences` words them (MySQL first); as `migrations::KNOWN_DIFFERENCES`.
#[cfg(feature = "mysql")]
const MYSQL_SCHEMA_RS_KNOWN_DIFFERENCES: &[&str] = &[];

/// `schema` as [`tables_of`] sees a schema.rs: tables, primary keys, and columns sorted by
/// name with their Diesel types and nullability.
#[cfg(feature = "mysql")]
fn as_schema_rs(schema: Schema) -> Schema {
    let tables = schema.tables.into_iter().map(|(name, table)| {
        let mut columns: Vec<Column> = table
            .columns
            .into_iter()
            .map(|c| Column {
                declared_type: String::new(),
                default: None,
                generated: None,
                ..c
            })
            .collect();
        columns.sort_by(|a, b| a.name.cmp(&b.name));
        let table = Table {
            columns,
            primary_key: table.primary_key,
            ..Table::default()
        };
        (name, table)
    });
    Schema {
        tables: tables.collect(),
        ..Schema::default()
    }
}

/// The tables, primary keys and columns (Diesel types, nullability) of the migrated MySQL
/// database are schema.rs's.
#[cfg(feature = "mysql")]
#[test]
fn mysql_schema_rs_matches_the_mysql_migrations() {
    let Some(mysql_db) = TestDatabase::create(Backend::Mysql) else {
        return;
    };
    let mut mysql = mysql_db.connect();
    order_engine::db::migrate(&mut mysql).expect("migrate MySQL");
    let schema_rs =
        std::fs::read_to_string(repository().join("src/db/schema.rs")).expect("read schema.rs");
    assert_only_listed_differences(
        as_schema_rs(catalog::read(&mut mysql)).differences(
            "MySQL",
            &tables_of(&schema_rs),
            "schema.rs",
        ),
        MYSQL_SCHEMA_RS_KNOWN_DIFFERENCES,
        "MYSQL_SCHEMA_RS_KNOWN_DIFFERENCES in tests/api/schema_rs.rs",
        "the MySQL migrations and src/db/schema.rs (PostgreSQL's) differ",
    );
}
