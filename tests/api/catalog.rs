//! What a migrated database says its schema is, read from its own catalog (PostgreSQL's
//! `pg_catalog`, SQLite's `sqlite_master` and pragmas, MySQL's and MariaDB's
//! `information_schema`) through Diesel. The migration tests compare these snapshots: up ->
//! down -> up on one backend (everything, in the backend's own words), and SQLite and MySQL
//! against PostgreSQL (what must be the same on all, in Diesel's words).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer, Nullable, Text};
use diesel::{PgConnection, SqliteConnection};
use order_engine::db::DbConnection;

/// One database's schema; Diesel's `__diesel_schema_migrations` is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
    /// Everything else a migration can create and its `down.sql` must drop (sequences, views,
    /// types, functions, triggers), each with its definition.
    pub others: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// In declaration order.
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// Every index but the primary key's, those behind UNIQUE constraints included.
    pub indexes: BTreeSet<Index>,
    pub foreign_keys: BTreeSet<ForeignKey>,
    /// The backend's own text for the rest, CHECKs among it: PostgreSQL's definition of each
    /// constraint, SQLite's CREATE TABLE statement, MySQL's table options and the definition
    /// of each CHECK and foreign key.
    pub definitions: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// As the backend spells it: `character varying(64)`, `VARCHAR(64)`.
    pub declared_type: String,
    /// The SQL type `diesel print-schema` gives the column, in Diesel's backend-neutral names
    /// (PostgreSQL's `Int8` is `BigInt`, `Varchar` is `Text`); see [`neutral_type`].
    pub diesel_type: String,
    /// Whether the column can hold NULL (an SQLite rowid alias cannot, whatever its pragma
    /// says: a NULL there means "the next rowid").
    pub nullable: bool,
    /// The default expression, as the backend prints it.
    pub default: Option<String>,
    /// How the backend makes values for it: `identity by default`, `identity always`, `rowid`,
    /// `rowid autoincrement`, `auto_increment`, `generated`.
    pub generated: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Index {
    /// The name the migration gave it; `None` for the index of a UNIQUE constraint, whose name
    /// the backend chose.
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub unique: bool,
    pub partial: bool,
    /// The backend's own text of it (PostgreSQL's `pg_get_indexdef`, SQLite's CREATE INDEX;
    /// empty for SQLite's constraint indexes, which have none; MySQL's a CREATE INDEX-like
    /// line made from `information_schema.STATISTICS`).
    pub definition: String,
    /// Made by the backend for a foreign key, not by a migration: InnoDB indexes every
    /// foreign key that no index leads with (named after the constraint, or its first
    /// column when the constraint is unnamed). PostgreSQL and SQLite make none.
    pub backs_foreign_key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub parent_table: String,
    pub parent_columns: Vec<String>,
    /// `NO ACTION`, `RESTRICT`, `CASCADE`, `SET NULL` or `SET DEFAULT`.
    pub on_update: String,
    pub on_delete: String,
}

/// Reads the schema of the database behind `conn`.
pub fn read(conn: &mut DbConnection) -> Schema {
    match conn {
        DbConnection::Postgresql(pg) => read_postgres(pg),
        DbConnection::Sqlite(sqlite) => read_sqlite(sqlite),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(mysql) => read_mysql(mysql),
    }
    .expect("read the schema from the catalog")
}

impl Schema {
    /// What must be the same on every backend: the tables; their columns by name, with Diesel
    /// type, nullability, default and whether ids are generated (and never reused); the primary
    /// keys; the indexes (named ones by name; partial or not, not the predicate's text), UNIQUE
    /// constraints and foreign keys. The backends' own texts are dropped, and so are the
    /// indexes InnoDB makes for foreign keys ([`Index::backs_foreign_key`]).
    pub fn portable(&self) -> Schema {
        let tables = self.tables.iter().map(|(name, table)| {
            let mut columns: Vec<Column> = table
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    declared_type: String::new(),
                    diesel_type: c.diesel_type.clone(),
                    nullable: c.nullable,
                    default: c
                        .default
                        .as_deref()
                        .map(|d| portable_default(d, &c.diesel_type)),
                    generated: c.generated.as_deref().map(|g| {
                        match g {
                            // All hand out ids that are never handed out again (InnoDB keeps
                            // its counter across restarts since MySQL 8 and MariaDB 10.2.4).
                            "identity by default"
                            | "identity always"
                            | "rowid autoincrement"
                            | "auto_increment" => "generated id",
                            other => other,
                        }
                        .to_string()
                    }),
                })
                .collect();
            // A rebuilt SQLite table may order its columns differently; Diesel names them.
            columns.sort_by(|a, b| a.name.cmp(&b.name));
            let indexes = table
                .indexes
                .iter()
                .filter(|i| !i.backs_foreign_key)
                .map(|i| Index {
                    definition: String::new(),
                    ..i.clone()
                })
                .collect();
            let table = Table {
                columns,
                primary_key: table.primary_key.clone(),
                indexes,
                foreign_keys: table.foreign_keys.clone(),
                definitions: BTreeSet::new(),
            };
            (name.clone(), table)
        });
        Schema {
            tables: tables.collect(),
            others: BTreeSet::new(),
        }
    }

    /// Every way `self` (called `this`) and `other` (called `that`) differ, one line each, as
    /// `table.column: field: <this value> on <this>, <that value> on <that>`.
    pub fn differences(&self, this: &str, other: &Schema, that: &str) -> Vec<String> {
        let mut out = Vec::new();
        let only = |out: &mut Vec<String>, what: String, side: &str| {
            out.push(format!("{what}: only on {side}"));
        };
        let field = |out: &mut Vec<String>, at: &str, name: &str, a: &dyn Debug, b: &dyn Debug| {
            let (a, b) = (format!("{a:?}"), format!("{b:?}"));
            if a != b {
                out.push(format!("{at}: {name}: {a} on {this}, {b} on {that}"));
            }
        };
        for (name, table) in &self.tables {
            let Some(theirs) = other.tables.get(name) else {
                only(&mut out, format!("table {name}"), this);
                continue;
            };
            for column in &table.columns {
                let at = format!("{name}.{}", column.name);
                let Some(their) = theirs.columns.iter().find(|c| c.name == column.name) else {
                    only(&mut out, format!("column {at}"), this);
                    continue;
                };
                field(
                    &mut out,
                    &at,
                    "declared type",
                    &column.declared_type,
                    &their.declared_type,
                );
                field(
                    &mut out,
                    &at,
                    "Diesel type",
                    &column.diesel_type,
                    &their.diesel_type,
                );
                field(&mut out, &at, "nullable", &column.nullable, &their.nullable);
                field(&mut out, &at, "default", &column.default, &their.default);
                field(
                    &mut out,
                    &at,
                    "generated",
                    &column.generated,
                    &their.generated,
                );
            }
            for column in &theirs.columns {
                if !table.columns.iter().any(|c| c.name == column.name) {
                    only(&mut out, format!("column {name}.{}", column.name), that);
                }
            }
            let order = |t: &Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
            field(
                &mut out,
                name,
                "column order",
                &order(table),
                &order(theirs),
            );
            field(
                &mut out,
                name,
                "primary key",
                &table.primary_key,
                &theirs.primary_key,
            );
            set_differences(
                &mut out,
                name,
                "index",
                &table.indexes,
                this,
                &theirs.indexes,
                that,
            );
            set_differences(
                &mut out,
                name,
                "foreign key",
                &table.foreign_keys,
                this,
                &theirs.foreign_keys,
                that,
            );
            set_differences(
                &mut out,
                name,
                "definition",
                &table.definitions,
                this,
                &theirs.definitions,
                that,
            );
        }
        for name in other.tables.keys() {
            if !self.tables.contains_key(name) {
                only(&mut out, format!("table {name}"), that);
            }
        }
        set_differences(
            &mut out,
            "schema",
            "object",
            &self.others,
            this,
            &other.others,
            that,
        );
        out
    }

    /// Each table's CHECK constraints as [`check_words`] puts them, for backends that keep
    /// each CHECK apart (PostgreSQL, MySQL; SQLite's are inside its CREATE TABLE text).
    #[cfg(feature = "mysql")]
    pub fn check_words(&self) -> BTreeMap<String, BTreeSet<Vec<String>>> {
        self.tables
            .iter()
            .map(|(name, table)| {
                let checks = table.definitions.iter().filter_map(|d| {
                    let (_, condition) =
                        d.strip_prefix("CONSTRAINT ").unwrap_or(d).split_once(' ')?;
                    condition
                        .starts_with("CHECK (")
                        .then(|| check_words(condition))
                });
                (name.clone(), checks.collect())
            })
            .collect()
    }

    /// True when nothing of the migrations' is left (after all of them were reverted).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.others.is_empty()
    }
}

fn set_differences<T: Ord + Debug>(
    out: &mut Vec<String>,
    at: &str,
    what: &str,
    this_set: &BTreeSet<T>,
    this: &str,
    that_set: &BTreeSet<T>,
    that: &str,
) {
    for item in this_set.difference(that_set) {
        out.push(format!("{at}: {what} {item:?}: only on {this}"));
    }
    for item in that_set.difference(this_set) {
        out.push(format!("{at}: {what} {item:?}: only on {that}"));
    }
}

/// A default as every backend would print it: PostgreSQL adds casts (`'x'::text`,
/// `'-1'::integer`) that SQLite and MySQL do not keep, and MySQL's booleans are TINYINT(1),
/// `true` printed as `1`.
fn portable_default(default: &str, diesel_type: &str) -> String {
    if diesel_type == "Bool" {
        match default {
            "1" => return "true".to_string(),
            "0" => return "false".to_string(),
            _ => {}
        }
    }
    let mut out = String::new();
    let mut rest = default;
    while let Some(at) = rest.find("::") {
        out.push_str(&rest[..at]);
        rest = rest[at + 2..]
            .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ' ');
    }
    out.push_str(rest);
    match out.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Some(number) if number.parse::<f64>().is_ok() => number.to_string(),
        _ => out,
    }
}

/// Diesel's backend-neutral name for a SQL type name of `diesel print-schema`'s PostgreSQL
/// output (`Int8` -> `BigInt`, `Varchar` -> `Text`); names it shares with SQLite stay as they
/// are. `Nullable<..>` and `Array<..>` are mapped inside.
pub fn neutral_type(diesel_type: &str) -> String {
    for wrapper in ["Nullable", "Array"] {
        if let Some(inner) = diesel_type
            .strip_prefix(wrapper)
            .and_then(|t| t.strip_prefix('<'))
            .and_then(|t| t.strip_suffix('>'))
        {
            return format!("{wrapper}<{}>", neutral_type(inner));
        }
    }
    match diesel_type {
        "Int2" => "SmallInt",
        "Int4" => "Integer",
        "Int8" => "BigInt",
        "Float4" => "Float",
        "Float8" => "Double",
        "Varchar" | "Bpchar" => "Text",
        "Bytea" => "Binary",
        other => other,
    }
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[derive(QueryableByName)]
struct PgColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    declared_type: String,
    #[diesel(sql_type = Text)]
    type_name: String,
    #[diesel(sql_type = Bool)]
    nullable: bool,
    #[diesel(sql_type = Nullable<Text>)]
    column_default: Option<String>,
    /// `attidentity`: empty, `a` (always) or `d` (by default).
    #[diesel(sql_type = Text)]
    identity: String,
    /// `attgenerated`: empty or `s` (stored).
    #[diesel(sql_type = Text)]
    generated: String,
}

#[derive(QueryableByName)]
struct PgIndex {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    index_name: String,
    /// Comma-separated key columns (or expressions).
    #[diesel(sql_type = Text)]
    columns: String,
    #[diesel(sql_type = Bool)]
    is_unique: bool,
    #[diesel(sql_type = Bool)]
    is_primary: bool,
    #[diesel(sql_type = Bool)]
    is_partial: bool,
    /// Whether a UNIQUE (or EXCLUDE) constraint made it.
    #[diesel(sql_type = Bool)]
    of_constraint: bool,
    #[diesel(sql_type = Text)]
    definition: String,
}

#[derive(QueryableByName)]
struct PgConstraint {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    constraint_name: String,
    /// `pg_constraint.contype`: `p`, `u`, `f`, `c`, `x`.
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    definition: String,
    /// For a foreign key: comma-separated columns, the parent table and its columns, and the
    /// actions (`confupdtype` / `confdeltype` codes).
    #[diesel(sql_type = Nullable<Text>)]
    columns: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    parent_table: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    parent_columns: Option<String>,
    #[diesel(sql_type = Text)]
    on_update: String,
    #[diesel(sql_type = Text)]
    on_delete: String,
}

#[derive(QueryableByName)]
struct Object {
    #[diesel(sql_type = Text)]
    object: String,
}

const PG_TABLES: &str = "n.nspname = 'public' AND t.relkind IN ('r', 'p') \
     AND t.relname <> '__diesel_schema_migrations'";

fn read_postgres(conn: &mut PgConnection) -> QueryResult<Schema> {
    let columns: Vec<PgColumn> = diesel::sql_query(format!(
        "SELECT t.relname::text AS table_name, a.attname::text AS column_name, \
                format_type(a.atttypid, a.atttypmod) AS declared_type, \
                ty.typname::text AS type_name, NOT a.attnotnull AS nullable, \
                pg_get_expr(d.adbin, d.adrelid) AS column_default, \
                a.attidentity::text AS identity, a.attgenerated::text AS generated \
         FROM pg_attribute a \
         JOIN pg_class t ON t.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN pg_type ty ON ty.oid = a.atttypid \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE {PG_TABLES} AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY t.relname, a.attnum"
    ))
    .load(conn)?;
    let indexes: Vec<PgIndex> = diesel::sql_query(format!(
        "SELECT t.relname::text AS table_name, i.relname::text AS index_name, \
                (SELECT string_agg(CASE WHEN k.attnum = 0 THEN '(expression)' \
                                   ELSE a.attname::text END, ',' ORDER BY k.ord) \
                 FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
                 LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum \
                 WHERE k.ord <= x.indnkeyatts) AS columns, \
                x.indisunique AS is_unique, x.indisprimary AS is_primary, \
                x.indpred IS NOT NULL AS is_partial, \
                EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid \
                        AND c.conrelid = x.indrelid AND c.contype IN ('u', 'x')) AS of_constraint, \
                pg_get_indexdef(x.indexrelid) AS definition \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE {PG_TABLES}"
    ))
    .load(conn)?;
    let names = |array: &str, table: &str| {
        format!(
            "(SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
              FROM unnest({array}) WITH ORDINALITY k(attnum, ord) \
              JOIN pg_attribute a ON a.attrelid = {table} AND a.attnum = k.attnum)"
        )
    };
    let constraints: Vec<PgConstraint> = diesel::sql_query(format!(
        "SELECT t.relname::text AS table_name, c.conname::text AS constraint_name, \
                c.contype::text AS kind, pg_get_constraintdef(c.oid) AS definition, \
                {} AS columns, p.relname::text AS parent_table, {} AS parent_columns, \
                c.confupdtype::text AS on_update, c.confdeltype::text AS on_delete \
         FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         LEFT JOIN pg_class p ON p.oid = c.confrelid \
         WHERE {PG_TABLES}",
        names("c.conkey", "c.conrelid"),
        names("c.confkey", "c.confrelid"),
    ))
    .load(conn)?;
    let others: Vec<Object> = diesel::sql_query(
        "SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' \
                WHEN 'm' THEN 'materialized view ' WHEN 'c' THEN 'type ' \
                ELSE 'relation ' || c.relkind::text || ' ' END || c.relname::text || \
                CASE WHEN c.relkind IN ('v', 'm') THEN ': ' || pg_get_viewdef(c.oid) ELSE '' END \
                AS object \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind NOT IN ('r', 'p', 'i', 'I') \
         UNION ALL \
         SELECT 'type ' || ty.typname::text || ' (' || ty.typtype::text || ')' \
         FROM pg_type ty JOIN pg_namespace n ON n.oid = ty.typnamespace \
         WHERE n.nspname = 'public' AND ty.typtype IN ('e', 'd', 'r', 'm') \
         UNION ALL \
         SELECT 'function ' || p.oid::regprocedure::text || CASE WHEN p.prokind IN ('f', 'p') \
                THEN ': ' || pg_get_functiondef(p.oid) ELSE '' END \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public' \
         UNION ALL \
         SELECT 'trigger ' || tg.tgname::text || ': ' || pg_get_triggerdef(tg.oid) \
         FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND NOT tg.tgisinternal",
    )
    .load(conn)?;

    let mut schema = Schema::default();
    for c in columns {
        let diesel_type = match c.type_name.strip_prefix('_') {
            Some(element) => format!("Array<{}>", capitalized(element)),
            None => capitalized(&c.type_name),
        };
        let generated = match (c.identity.as_str(), c.generated.as_str()) {
            ("d", _) => Some("identity by default".to_string()),
            ("a", _) => Some("identity always".to_string()),
            (_, "s") => Some("generated".to_string()),
            _ => None,
        };
        schema
            .tables
            .entry(c.table_name)
            .or_default()
            .columns
            .push(Column {
                name: c.column_name,
                declared_type: c.declared_type,
                diesel_type: neutral_type(&diesel_type),
                nullable: c.nullable,
                default: c.column_default,
                generated,
            });
    }
    for i in indexes {
        let table = schema.tables.entry(i.table_name).or_default();
        let columns = split(&i.columns);
        if i.is_primary {
            table.primary_key = columns;
            continue;
        }
        table.indexes.insert(Index {
            name: (!i.of_constraint).then_some(i.index_name),
            columns,
            unique: i.is_unique,
            partial: i.is_partial,
            definition: i.definition,
            backs_foreign_key: false,
        });
    }
    for c in constraints {
        let table = schema.tables.entry(c.table_name).or_default();
        table
            .definitions
            .insert(format!("{} {}", c.constraint_name, c.definition));
        if c.kind == "f" {
            table.foreign_keys.insert(ForeignKey {
                columns: split(c.columns.as_deref().unwrap_or_default()),
                parent_table: c.parent_table.unwrap_or_default(),
                parent_columns: split(c.parent_columns.as_deref().unwrap_or_default()),
                on_update: pg_action(&c.on_update),
                on_delete: pg_action(&c.on_delete),
            });
        }
    }
    schema.others = others.into_iter().map(|o| o.object).collect();
    Ok(schema)
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn pg_action(code: &str) -> String {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        other => other,
    }
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    table_sql: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    declared_type: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Nullable<Text>)]
    column_default: Option<String>,
    /// The column's place in the primary key, from 1; 0 when not in it.
    #[diesel(sql_type = Integer)]
    pk_position: i32,
    /// 2 and 3: a generated column.
    #[diesel(sql_type = Integer)]
    hidden: i32,
}

#[derive(QueryableByName)]
struct SqliteIndex {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    index_name: String,
    #[diesel(sql_type = Text)]
    columns: String,
    #[diesel(sql_type = Bool)]
    is_unique: bool,
    /// `c` (CREATE INDEX), `u` (UNIQUE constraint) or `pk`.
    #[diesel(sql_type = Text)]
    origin: String,
    #[diesel(sql_type = Bool)]
    is_partial: bool,
    #[diesel(sql_type = Nullable<Text>)]
    definition: Option<String>,
}

#[derive(QueryableByName)]
struct SqliteForeignKey {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Integer)]
    id: i32,
    #[diesel(sql_type = Text)]
    parent_table: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    /// NULL when the REFERENCES clause names no column: the parent's primary key.
    #[diesel(sql_type = Nullable<Text>)]
    parent_column: Option<String>,
    #[diesel(sql_type = Text)]
    on_update: String,
    #[diesel(sql_type = Text)]
    on_delete: String,
}

/// One foreign key of an SQLite table: its (column, parent column) pairs in order.
struct SqliteForeignKeyOf {
    parent_table: String,
    pairs: Vec<(String, Option<String>)>,
    on_update: String,
    on_delete: String,
}

const SQLITE_TABLES: &str =
    "m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '__diesel_schema_migrations'";

fn read_sqlite(conn: &mut SqliteConnection) -> QueryResult<Schema> {
    let columns: Vec<SqliteColumn> = diesel::sql_query(format!(
        "SELECT m.name AS table_name, m.sql AS table_sql, p.name AS column_name, \
                p.type AS declared_type, p.\"notnull\" AS not_null, \
                p.dflt_value AS column_default, p.pk AS pk_position, p.hidden AS hidden \
         FROM sqlite_master m JOIN pragma_table_xinfo(m.name) p \
         WHERE {SQLITE_TABLES} ORDER BY m.name, p.cid"
    ))
    .load(conn)?;
    let indexes: Vec<SqliteIndex> = diesel::sql_query(format!(
        "SELECT m.name AS table_name, l.name AS index_name, \
                (SELECT group_concat(name, ',') FROM \
                   (SELECT coalesce(i.name, '(expression)') AS name \
                    FROM pragma_index_info(l.name) i ORDER BY i.seqno)) AS columns, \
                l.\"unique\" AS is_unique, l.origin AS origin, l.partial AS is_partial, \
                (SELECT sql FROM sqlite_master WHERE type = 'index' AND name = l.name) \
                  AS definition \
         FROM sqlite_master m JOIN pragma_index_list(m.name) l WHERE {SQLITE_TABLES}"
    ))
    .load(conn)?;
    let foreign_keys: Vec<SqliteForeignKey> = diesel::sql_query(format!(
        "SELECT m.name AS table_name, f.id AS id, f.\"table\" AS parent_table, \
                f.\"from\" AS column_name, f.\"to\" AS parent_column, \
                f.on_update AS on_update, f.on_delete AS on_delete \
         FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f \
         WHERE {SQLITE_TABLES} ORDER BY m.name, f.id, f.seq"
    ))
    .load(conn)?;
    let others: Vec<Object> = diesel::sql_query(
        "SELECT type || ' ' || name || ': ' || coalesce(sql, '') AS object FROM sqlite_master \
         WHERE type IN ('view', 'trigger') AND name NOT LIKE 'sqlite_%'",
    )
    .load(conn)?;

    let mut schema = Schema::default();
    // The primary key in key order, and the rowid alias: a sole `INTEGER` primary key column
    // of a table with rowids.
    let mut keys: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    let mut rowid_alias: BTreeMap<String, String> = BTreeMap::new();
    for c in &columns {
        if c.pk_position > 0 {
            keys.entry(c.table_name.clone())
                .or_default()
                .push((c.pk_position, c.column_name.clone()));
        }
    }
    for c in &columns {
        let sole_key = keys.get(&c.table_name).is_some_and(|key| key.len() == 1);
        if sole_key
            && c.pk_position == 1
            && c.declared_type.eq_ignore_ascii_case("integer")
            && !c.table_sql.to_uppercase().contains("WITHOUT ROWID")
        {
            rowid_alias.insert(c.table_name.clone(), c.column_name.clone());
        }
    }
    let mut grouped: BTreeMap<(String, i32), SqliteForeignKeyOf> = BTreeMap::new();
    for f in foreign_keys {
        let entry = grouped
            .entry((f.table_name, f.id))
            .or_insert_with(|| SqliteForeignKeyOf {
                parent_table: f.parent_table,
                pairs: Vec::new(),
                on_update: f.on_update,
                on_delete: f.on_delete,
            });
        entry.pairs.push((f.column_name, f.parent_column));
    }
    let references_rowid = |table: &str, column: &str| {
        grouped.iter().any(|((child, _), fk)| {
            child == table
                && matches!(fk.pairs.as_slice(), [(from, to)] if from == column
                && rowid_alias.get(&fk.parent_table).is_some_and(|alias| {
                    to.as_deref().is_none_or(|to| to == alias)
                }))
        })
    };

    for c in &columns {
        let is_rowid = rowid_alias.get(&c.table_name) == Some(&c.column_name);
        let generated = if is_rowid {
            let autoincrement = c.table_sql.to_uppercase().contains("AUTOINCREMENT");
            Some(
                if autoincrement {
                    "rowid autoincrement"
                } else {
                    "rowid"
                }
                .to_string(),
            )
        } else if c.hidden >= 2 {
            Some("generated".to_string())
        } else {
            None
        };
        let bigint_key = is_rowid || references_rowid(&c.table_name, &c.column_name);
        let table = schema.tables.entry(c.table_name.clone()).or_default();
        table.definitions.insert(normalized_table_sql(&c.table_sql));
        table.columns.push(Column {
            name: c.column_name.clone(),
            declared_type: c.declared_type.clone(),
            diesel_type: sqlite_diesel_type(&c.declared_type, bigint_key),
            nullable: !c.not_null && !is_rowid,
            default: c.column_default.clone(),
            generated,
        });
    }
    for (table_name, mut key) in keys {
        key.sort();
        schema.tables.entry(table_name).or_default().primary_key =
            key.into_iter().map(|(_, name)| name).collect();
    }
    for i in indexes {
        if i.origin == "pk" {
            continue;
        }
        schema
            .tables
            .entry(i.table_name)
            .or_default()
            .indexes
            .insert(Index {
                name: (i.origin == "c").then_some(i.index_name),
                columns: split(&i.columns),
                unique: i.is_unique,
                partial: i.is_partial,
                definition: i.definition.unwrap_or_default(),
                backs_foreign_key: false,
            });
    }
    for ((table_name, _), fk) in grouped {
        let parent_key = schema
            .tables
            .get(&fk.parent_table)
            .map(|t| t.primary_key.clone())
            .unwrap_or_default();
        let parent_columns = fk
            .pairs
            .iter()
            .enumerate()
            .map(|(i, (_, to))| {
                to.clone()
                    .or_else(|| parent_key.get(i).cloned())
                    .unwrap_or_default()
            })
            .collect();
        schema
            .tables
            .entry(table_name)
            .or_default()
            .foreign_keys
            .insert(ForeignKey {
                columns: fk.pairs.into_iter().map(|(from, _)| from).collect(),
                parent_table: fk.parent_table,
                parent_columns,
                on_update: fk.on_update,
                on_delete: fk.on_delete,
            });
    }
    schema.others = others.into_iter().map(|o| o.object).collect();
    Ok(schema)
}

/// The SQL type `diesel print-schema` gives an SQLite column of this declared type, with
/// `sqlite_integer_primary_key_is_bigint` (its rules, diesel_cli 2.3 `determine_column_type`):
/// an `INTEGER` rowid alias, or a column referencing one, is `BigInt`.
fn sqlite_diesel_type(declared_type: &str, bigint_key: bool) -> String {
    let t = declared_type.to_lowercase();
    let has = |part: &str| t.contains(part);
    if t == "boolean" || t == "bool" || has("tiny") && has("int") {
        "Bool"
    } else if t == "int2" || has("small") && has("int") {
        "SmallInt"
    } else if t == "int8" || has("big") && has("int") {
        "BigInt"
    } else if has("int") {
        if bigint_key {
            "BigInt"
        } else {
            "Integer"
        }
    } else if has("char") || has("clob") || has("text") {
        "Text"
    } else if has("blob") || has("binary") || t.is_empty() {
        "Binary"
    } else if has("float") || has("real") {
        "Float"
    } else if has("double") || has("num") || has("dec") {
        "Double"
    } else if t == "datetime" || t == "timestamp" {
        "Timestamp"
    } else if t == "date" {
        "Date"
    } else if t == "time" {
        "Time"
    } else {
        return format!("(unsupported by diesel print-schema: {declared_type})");
    }
    .to_string()
}

/// A table's `CREATE TABLE` text as SQLite keeps it, without what a rebuild (create, copy,
/// rename: how a migration changes a CHECK or a UNIQUE) changes but does not mean: the quotes
/// `ALTER TABLE ... RENAME` puts around the name, and whitespace (the alignment of columns, a
/// column added by `ALTER TABLE ... ADD COLUMN` after a line break).
fn normalized_table_sql(sql: &str) -> String {
    let unquoted = match sql.strip_prefix("CREATE TABLE \"") {
        Some(rest) => match rest.split_once('"') {
            Some((name, tail)) => format!("CREATE TABLE {name}{tail}"),
            None => sql.to_string(),
        },
        None => sql.to_string(),
    };
    let collapsed = unquoted.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(collapsed.len());
    for c in collapsed.chars() {
        if matches!(c, ',' | '(' | ')') && out.ends_with(' ') {
            out.pop();
        }
        if c == ' ' && (out.ends_with(',') || out.ends_with('(')) {
            continue;
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB

#[cfg(feature = "mysql")]
pub use mysql::read_mysql;

#[cfg(feature = "mysql")]
mod mysql {
    use std::collections::BTreeMap;

    use diesel::prelude::*;
    use diesel::sql_types::{Nullable, Text};
    use diesel::MysqlConnection;

    use super::{split, Column, ForeignKey, Index, Object, Schema};

    // Everything is read as text: Diesel's MySQL backend reads a column by the type the
    // server sends, and information_schema's numbers differ in width between MySQL and MariaDB.

    #[derive(QueryableByName)]
    struct MysqlColumn {
        #[diesel(sql_type = Text)]
        table_name: String,
        #[diesel(sql_type = Text)]
        column_name: String,
        /// `COLUMN_TYPE` (`varchar(64)`, `bigint(20)`, `tinyint(1)`), without its collation.
        #[diesel(sql_type = Text)]
        column_type: String,
        /// `COLUMN_TYPE` and, for text, ` COLLATE <collation>`.
        #[diesel(sql_type = Text)]
        declared_type: String,
        /// `YES` or `NO`.
        #[diesel(sql_type = Text)]
        is_nullable: String,
        #[diesel(sql_type = Nullable<Text>)]
        column_default: Option<String>,
        /// `auto_increment`, `VIRTUAL GENERATED`, `STORED GENERATED`, `on update ...`, or empty.
        #[diesel(sql_type = Text)]
        extra: String,
    }

    #[derive(QueryableByName)]
    struct MysqlIndex {
        #[diesel(sql_type = Text)]
        table_name: String,
        #[diesel(sql_type = Text)]
        index_name: String,
        /// `0` for a unique index.
        #[diesel(sql_type = Text)]
        non_unique: String,
        /// Comma-separated key columns (`(expression)` for a MySQL 8 functional key part).
        #[diesel(sql_type = Text)]
        columns: String,
        /// The key parts with their prefix lengths and order: `url(191), id DESC`.
        #[diesel(sql_type = Text)]
        key_parts: String,
        #[diesel(sql_type = Text)]
        index_type: String,
    }

    #[derive(QueryableByName)]
    struct MysqlForeignKey {
        #[diesel(sql_type = Text)]
        table_name: String,
        #[diesel(sql_type = Text)]
        constraint_name: String,
        #[diesel(sql_type = Text)]
        columns: String,
        #[diesel(sql_type = Text)]
        parent_table: String,
        #[diesel(sql_type = Text)]
        parent_columns: String,
        #[diesel(sql_type = Text)]
        on_update: String,
        #[diesel(sql_type = Text)]
        on_delete: String,
    }

    #[derive(QueryableByName)]
    struct MysqlCheck {
        #[diesel(sql_type = Text)]
        table_name: String,
        #[diesel(sql_type = Text)]
        constraint_name: String,
        #[diesel(sql_type = Text)]
        check_clause: String,
    }

    #[derive(QueryableByName)]
    struct MysqlTable {
        #[diesel(sql_type = Text)]
        table_name: String,
        #[diesel(sql_type = Text)]
        options: String,
    }

    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }

    /// The base tables of the connection's database, Diesel's own left out.
    const MYSQL_TABLES: &str = "TABLE_NAME IN (SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' \
         AND TABLE_NAME <> '__diesel_schema_migrations')";

    /// Reads the schema of the connection's database from `information_schema`.
    pub fn read_mysql(conn: &mut MysqlConnection) -> QueryResult<Schema> {
        let tables: Vec<MysqlTable> = diesel::sql_query(format!(
            "SELECT TABLE_NAME AS table_name, \
                    CONCAT('ENGINE=', COALESCE(ENGINE, ''), ' COLLATE=', \
                           COALESCE(TABLE_COLLATION, ''), ' ', COALESCE(CREATE_OPTIONS, '')) \
                      AS options \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND {MYSQL_TABLES}"
        ))
        .load(conn)?;
        let columns: Vec<MysqlColumn> = diesel::sql_query(format!(
            "SELECT TABLE_NAME AS table_name, COLUMN_NAME AS column_name, \
                    COLUMN_TYPE AS column_type, \
                    CONCAT(COLUMN_TYPE, COALESCE(CONCAT(' COLLATE ', COLLATION_NAME), '')) \
                      AS declared_type, \
                    IS_NULLABLE AS is_nullable, COLUMN_DEFAULT AS column_default, \
                    EXTRA AS extra \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND {MYSQL_TABLES} \
             ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ))
        .load(conn)?;
        let indexes: Vec<MysqlIndex> = diesel::sql_query(format!(
            "SELECT TABLE_NAME AS table_name, INDEX_NAME AS index_name, \
                    CAST(NON_UNIQUE AS CHAR) AS non_unique, \
                    GROUP_CONCAT(COALESCE(COLUMN_NAME, '(expression)') \
                                 ORDER BY SEQ_IN_INDEX SEPARATOR ',') AS columns, \
                    GROUP_CONCAT(CONCAT(COALESCE(COLUMN_NAME, '(expression)'), \
                                        COALESCE(CONCAT('(', SUB_PART, ')'), ''), \
                                        IF(COLLATION = 'D', ' DESC', '')) \
                                 ORDER BY SEQ_IN_INDEX SEPARATOR ', ') AS key_parts, \
                    INDEX_TYPE AS index_type \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND {MYSQL_TABLES} \
             GROUP BY TABLE_NAME, INDEX_NAME, NON_UNIQUE, INDEX_TYPE"
        ))
        .load(conn)?;
        let foreign_keys: Vec<MysqlForeignKey> = diesel::sql_query(
            "SELECT r.TABLE_NAME AS table_name, r.CONSTRAINT_NAME AS constraint_name, \
                    GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ',') \
                      AS columns, \
                    r.REFERENCED_TABLE_NAME AS parent_table, \
                    GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION \
                                 SEPARATOR ',') AS parent_columns, \
                    r.UPDATE_RULE AS on_update, r.DELETE_RULE AS on_delete \
             FROM information_schema.REFERENTIAL_CONSTRAINTS r \
             JOIN information_schema.KEY_COLUMN_USAGE k \
               ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA AND k.TABLE_NAME = r.TABLE_NAME \
              AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME \
             WHERE r.CONSTRAINT_SCHEMA = DATABASE() \
             GROUP BY r.TABLE_NAME, r.CONSTRAINT_NAME, r.REFERENCED_TABLE_NAME, \
                      r.UPDATE_RULE, r.DELETE_RULE",
        )
        .load(conn)?;
        let version: Version = diesel::sql_query("SELECT VERSION() AS version").get_result(conn)?;
        // MariaDB names CHECKs per table (a column's CHECK after its column, the others
        // CONSTRAINT_<n>) and says the table in CHECK_CONSTRAINTS; MySQL 8 names them per
        // database (<table>_chk_<n>) and says the table only in TABLE_CONSTRAINTS.
        let checks: Vec<MysqlCheck> = diesel::sql_query(if version.version.contains("MariaDB") {
            "SELECT TABLE_NAME AS table_name, CONSTRAINT_NAME AS constraint_name, \
                    CHECK_CLAUSE AS check_clause \
             FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()"
        } else {
            "SELECT t.TABLE_NAME AS table_name, c.CONSTRAINT_NAME AS constraint_name, \
                    c.CHECK_CLAUSE AS check_clause \
             FROM information_schema.CHECK_CONSTRAINTS c \
             JOIN information_schema.TABLE_CONSTRAINTS t \
               ON t.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA \
              AND t.CONSTRAINT_NAME = c.CONSTRAINT_NAME AND t.CONSTRAINT_TYPE = 'CHECK' \
             WHERE c.CONSTRAINT_SCHEMA = DATABASE()"
        })
        .load(conn)?;
        let others: Vec<Object> = diesel::sql_query(
            "SELECT CONCAT(LOWER(TABLE_TYPE), ' ', TABLE_NAME) AS object \
             FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE NOT IN ('BASE TABLE', 'VIEW') \
             UNION ALL \
             SELECT CONCAT('view ', TABLE_NAME, ': ', VIEW_DEFINITION) \
             FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() \
             UNION ALL \
             SELECT CONCAT('trigger ', TRIGGER_NAME, ': ', ACTION_TIMING, ' ', \
                           EVENT_MANIPULATION, ' ON ', EVENT_OBJECT_TABLE, ' FOR EACH ROW ', \
                           ACTION_STATEMENT) \
             FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() \
             UNION ALL \
             SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_NAME, ': ', \
                           COALESCE(ROUTINE_DEFINITION, '')) \
             FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() \
             UNION ALL \
             SELECT CONCAT('event ', EVENT_NAME, ': ', EVENT_DEFINITION) \
             FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()",
        )
        .load(conn)?;

        let mut schema = Schema::default();
        for t in tables {
            schema
                .tables
                .entry(t.table_name)
                .or_default()
                .definitions
                .insert(t.options.trim_end().to_string());
        }
        for c in columns {
            let nullable = c.is_nullable == "YES";
            let generated = if c.extra.contains("auto_increment") {
                Some("auto_increment".to_string())
            } else if c.extra.contains("GENERATED") || c.extra.contains("PERSISTENT") {
                Some("generated".to_string())
            } else {
                None
            };
            schema
                .tables
                .entry(c.table_name)
                .or_default()
                .columns
                .push(Column {
                    name: c.column_name,
                    diesel_type: mysql_diesel_type(&c.column_type),
                    declared_type: c.declared_type,
                    nullable,
                    // MariaDB prints no default as NULL (and quotes literals: 'NULL' is text).
                    default: c.column_default.filter(|d| d != "NULL"),
                    generated,
                });
        }
        let mut foreign_key_names: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
        for f in foreign_keys {
            let table = schema.tables.entry(f.table_name.clone()).or_default();
            let (on_update, on_delete) = (mysql_action(&f.on_update), mysql_action(&f.on_delete));
            table.definitions.insert(format!(
                "CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON UPDATE {on_update} \
                 ON DELETE {on_delete}",
                f.constraint_name, f.columns, f.parent_table, f.parent_columns
            ));
            foreign_key_names
                .entry(f.table_name)
                .or_default()
                .push((f.constraint_name, split(&f.columns)));
            table.foreign_keys.insert(ForeignKey {
                columns: split(&f.columns),
                parent_table: f.parent_table,
                parent_columns: split(&f.parent_columns),
                on_update,
                on_delete,
            });
        }
        for c in checks {
            schema
                .tables
                .entry(c.table_name)
                .or_default()
                .definitions
                .insert(format!(
                    "CONSTRAINT {} CHECK ({})",
                    c.constraint_name, c.check_clause
                ));
        }
        for i in indexes {
            let columns = split(&i.columns);
            let table = schema.tables.entry(i.table_name.clone()).or_default();
            if i.index_name == "PRIMARY" {
                table.primary_key = columns;
                continue;
            }
            let unique = i.non_unique == "0";
            let backend_named = is_backend_name(&i.index_name, &columns);
            let backs_foreign_key = !unique
                && foreign_key_names
                    .get(&i.table_name)
                    .into_iter()
                    .flatten()
                    .any(|(fk_name, fk_columns)| {
                        *fk_columns == columns && (backend_named || *fk_name == i.index_name)
                    });
            table.indexes.insert(Index {
                definition: format!(
                    "{}INDEX {} ({}) USING {}",
                    if unique { "UNIQUE " } else { "" },
                    i.index_name,
                    i.key_parts,
                    i.index_type
                ),
                // An unnamed UNIQUE (a UNIQUE constraint elsewhere) is the index the server
                // named, as PostgreSQL's and SQLite's constraint indexes are.
                name: (!(unique && backend_named)).then_some(i.index_name),
                columns,
                unique,
                // MySQL has no partial indexes.
                partial: false,
                backs_foreign_key,
            });
        }
        schema.others = others.into_iter().map(|o| o.object).collect();
        Ok(schema)
    }

    /// Whether `name` is what MySQL calls an index or key the statement left unnamed: its
    /// first column, with `_2`, `_3`... when that is taken.
    fn is_backend_name(name: &str, columns: &[String]) -> bool {
        let Some(first) = columns.first() else {
            return false;
        };
        name == first
            || name.strip_prefix(first.as_str()).is_some_and(|rest| {
                rest.strip_prefix('_')
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
    }

    /// InnoDB checks foreign keys at once, never deferred: RESTRICT and NO ACTION are the one
    /// action, which MariaDB reports as RESTRICT when no ON clause names it and MySQL 8 as NO
    /// ACTION. Both are read as NO ACTION, the SQL default (PostgreSQL's and SQLite's word).
    fn mysql_action(rule: &str) -> String {
        match rule {
            "RESTRICT" => "NO ACTION",
            other => other,
        }
        .to_string()
    }

    /// The SQL type of a column of this `COLUMN_TYPE` in Diesel's backend-neutral names, by
    /// `diesel print-schema`'s MySQL rules (diesel_cli 2.3: `tinyint(1)` is `Bool`, `int...`
    /// `Integer`, otherwise the name before the parenthesis) with its MySQL-only names made
    /// neutral: `Bigint` is `BigInt`, `Varchar` / `Char` and the text sizes `Text`, and
    /// `Datetime` (Diesel's `mysql::Datetime`) `Timestamp`, as the shared schema.rs has these
    /// columns. That last one is a name only: Diesel binds a `Timestamp` as MySQL's TIMESTAMP,
    /// which loses values past 2038 (README, "MySQL / MariaDB"), and this check cannot see it.
    fn mysql_diesel_type(column_type: &str) -> String {
        let t = column_type.to_lowercase();
        let unsigned = t.contains("unsigned");
        let name = t.split(['(', ' ']).next().unwrap_or_default();
        let neutral = if t == "tinyint(1)" {
            "Bool"
        } else {
            match name {
                "tinyint" => "TinyInt",
                "smallint" => "SmallInt",
                "mediumint" | "int" | "integer" => "Integer",
                "bigint" => "BigInt",
                "float" => "Float",
                "double" | "real" => "Double",
                "decimal" | "numeric" => "Numeric",
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => "Text",
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                    "Binary"
                }
                "datetime" | "timestamp" => "Timestamp",
                "date" => "Date",
                "time" => "Time",
                "json" => "Json",
                _ => return format!("(unsupported by diesel print-schema: {column_type})"),
            }
        };
        if unsigned {
            format!("Unsigned<{neutral}>")
        } else {
            neutral.to_string()
        }
    }
}

/// A CHECK condition's words, sorted: its column names (lowercase, unquoted), literals and
/// comparison operators, without what the backends print differently for one condition:
/// casts (`'a'::text`, `(status)::text`, `::text[]`), MySQL's charset introducers
/// (`_utf8mb4'a'`), parentheses, `ANY (ARRAY[...])` against `IN (...)` (both `=`), and `!=`
/// against `<>`. Two conditions with the same words are not proven the same (the order and
/// nesting are gone), but a value or column added to one backend's CHECK and not the other's
/// shows.
pub fn check_words(condition: &str) -> Vec<String> {
    let chars: Vec<char> = condition.chars().collect();
    let mut words = Vec::new();
    let mut at = 0;
    let word_end = |from: usize| {
        let mut end = from;
        while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
            end += 1;
        }
        end
    };
    while at < chars.len() {
        let c = chars[at];
        if c == '\'' {
            let mut end = at + 1;
            while end < chars.len() {
                if chars[end] == '\'' && chars.get(end + 1) == Some(&'\'') {
                    end += 2;
                } else if chars[end] == '\'' {
                    break;
                } else {
                    end += 1;
                }
            }
            words.push(chars[at..=end.min(chars.len() - 1)].iter().collect());
            at = end + 1;
        } else if c == '`' || c == '"' {
            let end = chars[at + 1..]
                .iter()
                .position(|&q| q == c)
                .map_or(chars.len(), |p| at + 1 + p);
            words.push(chars[at + 1..end].iter().collect::<String>().to_lowercase());
            at = end + 1;
        } else if c == ':' && chars.get(at + 1) == Some(&':') {
            // A cast: its type's words (`character varying`, `double precision`) and `[]`.
            at += 2;
            loop {
                while chars.get(at) == Some(&' ') {
                    at += 1;
                }
                let end = word_end(at);
                let word: String = chars[at..end].iter().collect::<String>().to_lowercase();
                if end == at {
                    break;
                }
                at = end;
                if word != "character" && word != "double" {
                    break;
                }
            }
            while chars.get(at) == Some(&'[') || chars.get(at) == Some(&']') {
                at += 1;
            }
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let end = word_end(at + 1);
            let word: String = chars[at..end].iter().collect::<String>().to_lowercase();
            at = end;
            if word.starts_with('_') && chars.get(at) == Some(&'\'') {
                continue;
            }
            match word.as_str() {
                "check" | "any" | "array" => {}
                "in" => words.push("=".to_string()),
                _ => words.push(word),
            }
        } else if "<>=!".contains(c) {
            let mut end = at;
            while end < chars.len() && "<>=!".contains(chars[end]) {
                end += 1;
            }
            let operator: String = chars[at..end].iter().collect();
            words.push(if operator == "!=" {
                "<>".to_string()
            } else {
                operator
            });
            at = end;
        } else {
            at += 1;
        }
    }
    words.sort();
    words
}

#[test]
fn check_words_are_the_same_for_one_condition_as_each_backend_prints_it() {
    let same = [
        [
            "CHECK ((status = ANY (ARRAY['pending'::text, 'paid'::text])))",
            "CHECK (((status)::text = ANY ((ARRAY['pending'::character varying, \
             'paid'::character varying])::text[])))",
            "CHECK (`status` in ('pending','paid'))",
            "CHECK ((`status` in (_utf8mb4'pending',_utf8mb4'paid')))",
        ],
        [
            "CHECK (((status = 'paid'::text) = (paid_at IS NOT NULL)))",
            "CHECK (((status)::text = 'paid'::text) = (paid_at IS NOT NULL))",
            "CHECK (`status` = 'paid' = (`paid_at` is not null))",
            "CHECK (((`status` = _utf8mb4'paid') = (`paid_at` is not null)))",
        ],
    ];
    for forms in same {
        for form in &forms[1..] {
            assert_eq!(check_words(form), check_words(forms[0]), "{form}");
        }
    }
    assert_ne!(
        check_words("CHECK (`kind` in ('grant','refund'))"),
        check_words("CHECK ((kind = ANY (ARRAY['grant'::text, 'refund'::text, 'x'::text])))")
    );
    assert_ne!(
        check_words("CHECK (`points` > 0)"),
        check_words("CHECK ((points >= 0))")
    );
    assert_eq!(
        check_words("CHECK ((name <> ''::text))"),
        check_words("CHECK (`name` <> '')")
    );
}
