//! The schema's own SQL types, where Diesel's own would be wrong on a backend.
//!
//! [`Timestamp`] replaces `diesel::sql_types::Timestamp` in [`super::schema`] (diesel.toml's
//! `import_types` puts it there, so schema.rs stays generated): a UTC instant without a zone,
//! chrono's `NaiveDateTime`. Diesel's own binds as MySQL's `TIMESTAMP`, whose range ends at
//! 2038-01-19T03:14:07Z — MariaDB then stores NULL in the `DATETIME(3)` columns for anything
//! later, without an error. This one binds as `DATETIME` on MySQL (range up to 9999-12-31)
//! and is PostgreSQL's `timestamp` and SQLite's text timestamp, as Diesel's is; every value
//! conversion is Diesel's own.
//!
//! Rows read into `NaiveDateTime` as before. A `NaiveDateTime` *value* in a query (compared
//! with a column, set, inserted) is written [`At`]`(t)` (`Option<At>` for a nullable column):
//! Rust's coherence rules forbid `AsExpression<Timestamp> for NaiveDateTime` here, since
//! Diesel's blanket `AsExpression<T::SqlType> for T: Expression` may cover it one day.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::query_builder::QueryId;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{self, HasSqlType, SqlType};
use diesel::sqlite::Sqlite;

use super::MultiBackend;

/// A UTC instant to the microsecond (the engine keeps milliseconds): `timestamp` on
/// PostgreSQL, text on SQLite, `DATETIME` on MySQL / MariaDB.
#[derive(Debug, Clone, Copy, Default, QueryId, SqlType)]
#[diesel(postgres_type(oid = 1114, array_oid = 1115))]
#[diesel(sqlite_type(name = "Text"))]
#[diesel(mysql_type(name = "DateTime"))]
pub struct Timestamp;

impl HasSqlType<Timestamp> for MultiBackend {
    fn metadata(lookup: &mut Self::MetadataLookup) -> Self::TypeMetadata {
        MultiBackend::lookup_sql_type::<Timestamp>(lookup)
    }
}

/// As Diesel's `Timestamp` (the `table!` macro asks for these of a column named so):
/// PostgreSQL's `timestamp ± interval`.
impl sql_types::ops::Add for Timestamp {
    type Rhs = sql_types::Interval;
    type Output = Timestamp;
}

impl sql_types::ops::Sub for Timestamp {
    type Rhs = sql_types::Interval;
    type Output = Timestamp;
}

/// A `NaiveDateTime` as a [`Timestamp`] value in a query: `orders::expires_at.lt(At(now))`,
/// `orders::paid_at.eq(Some(now))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression)]
#[diesel(sql_type = Timestamp)]
pub struct At(pub NaiveDateTime);

impl From<NaiveDateTime> for At {
    fn from(at: NaiveDateTime) -> Self {
        At(at)
    }
}

/// `ToSql` and `FromSql` of `NaiveDateTime`, and `ToSql` of [`At`], for [`Timestamp`] on one
/// backend: Diesel's own for `$diesel_type` there.
macro_rules! delegate {
    ($backend:ty, $diesel_type:ty) => {
        impl ToSql<Timestamp, $backend> for NaiveDateTime {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, $backend>) -> serialize::Result {
                <NaiveDateTime as ToSql<$diesel_type, $backend>>::to_sql(self, out)
            }
        }

        impl ToSql<Timestamp, $backend> for At {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, $backend>) -> serialize::Result {
                <NaiveDateTime as ToSql<$diesel_type, $backend>>::to_sql(&self.0, out)
            }
        }

        impl FromSql<Timestamp, $backend> for NaiveDateTime {
            fn from_sql(bytes: <$backend as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                <NaiveDateTime as FromSql<$diesel_type, $backend>>::from_sql(bytes)
            }
        }
    };
}

delegate!(Pg, sql_types::Timestamp);
delegate!(Sqlite, sql_types::Timestamp);
#[cfg(feature = "mysql")]
delegate!(diesel::mysql::Mysql, sql_types::Datetime);

impl ToSql<Timestamp, MultiBackend> for NaiveDateTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
        out.set_value((Timestamp, self));
        Ok(serialize::IsNull::No)
    }
}

impl ToSql<Timestamp, MultiBackend> for At {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
        out.set_value((Timestamp, self));
        Ok(serialize::IsNull::No)
    }
}

impl FromSql<Timestamp, MultiBackend> for NaiveDateTime {
    fn from_sql(bytes: <MultiBackend as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        bytes.from_sql::<NaiveDateTime, Timestamp>()
    }
}
