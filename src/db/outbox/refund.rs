//! The refund effect of an order closed unpaid: one `refund` ledger row and its points back
//! on the user. A refund row already there (unique (order_no, kind)) is skipped, and so are
//! its points, so a replay is a no-op.

use std::collections::BTreeMap;

use crate::db::sql_types::At;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::*;
use crate::db::{lock_users, sorted_unique, DbConnection, UserLock};
use crate::domain::ids::OrderNo;
use crate::domain::states::LedgerKind;
use crate::per_backend;

/// The refunds of `mine` (orders with a pending refund, locked).
pub fn apply(conn: &mut DbConnection, mine: &[OrderNo], now: NaiveDateTime) -> QueryResult<()> {
    let spent: Vec<(OrderNo, i64, i64)> = orders::table
        .filter(orders::order_no.eq_any(mine))
        .select((orders::order_no, orders::user_id, orders::points_used))
        .load(conn)?;
    // Lock the users first, in id order: the ledger insert below takes key-share locks on
    // them (its foreign key) in its own order, which would deadlock with a concurrent batch.
    let users_touched = sorted_unique(
        spent
            .iter()
            .filter(|(_, _, points)| *points > 0)
            .map(|(_, user, _)| *user),
    );
    lock_users(conn, &users_touched, UserLock::Update)?;
    let rows: Vec<_> = spent
        .iter()
        .filter(|(_, _, points)| *points > 0)
        .map(|(no, user, points)| {
            (
                points_ledger::user_id.eq(*user),
                points_ledger::order_no.eq(no.as_str()),
                points_ledger::kind.eq(LedgerKind::Refund),
                points_ledger::delta.eq(*points),
                points_ledger::created_at.eq(At(now)),
            )
        })
        .collect();
    // A refund row already there (a replay) is skipped, and so are its points.
    let inserted: Vec<OrderNo> = if rows.is_empty() {
        Vec::new()
    } else {
        per_backend!(
            conn,
            |c| diesel::insert_into(points_ledger::table)
                .values(&rows)
                .on_conflict_do_nothing()
                .returning(points_ledger::order_no)
                .get_results(c),
            mysql | m | {
                // No RETURNING: the refunds already there are read first (their effects are
                // locked, so no other transaction writes them meanwhile) and only the others
                // inserted.
                let present: Vec<OrderNo> = points_ledger::table
                    .filter(points_ledger::order_no.eq_any(mine))
                    .filter(points_ledger::kind.eq(LedgerKind::Refund))
                    .select(points_ledger::order_no)
                    .load(m)?;
                let (new, fresh): (Vec<_>, Vec<OrderNo>) = rows
                    .iter()
                    .zip(spent.iter().filter(|(_, _, points)| *points > 0))
                    .filter(|(_, (no, _, _))| !present.contains(no))
                    .map(|(row, (no, _, _))| (*row, no.clone()))
                    .unzip();
                if !new.is_empty() {
                    diesel::insert_into(points_ledger::table)
                        .values(&new)
                        .execute(m)?;
                }
                Ok::<_, diesel::result::Error>(fresh)
            }
        )?
    };
    let mut per_user: BTreeMap<i64, i64> = BTreeMap::new();
    for (no, user, points) in &spent {
        if inserted.contains(no) {
            *per_user.entry(*user).or_default() += points;
        }
    }
    add_points(conn, per_user)?;
    Ok(())
}

/// Adds points to users (locked first by [`lock_users`]): one statement on PostgreSQL and
/// MySQL, one per user on SQLite (in-process, no round trips).
fn add_points(conn: &mut DbConnection, per_user: BTreeMap<i64, i64>) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt};
    match conn {
        // A batch's refunds seldom share a user, and an UPDATE a user was a prepare, an execute
        // and a close each: most of MariaDB's work in a burst of timeouts (BENCHMARKS.md).
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(my) => {
            if per_user.is_empty() {
                return Ok(());
            }
            let mut query = diesel::sql_query("UPDATE users SET points = points + CASE id")
                .into_boxed::<diesel::mysql::Mysql>();
            for (user, points) in &per_user {
                query = query
                    .sql(" WHEN ? THEN ?")
                    .bind::<BigInt, _>(*user)
                    .bind::<BigInt, _>(*points);
            }
            query = query.sql(" END WHERE id IN (");
            for (i, user) in per_user.keys().enumerate() {
                query = query
                    .sql(if i == 0 { "?" } else { ", ?" })
                    .bind::<BigInt, _>(*user);
            }
            query.sql(")").execute(my)?;
        }
        DbConnection::Postgresql(pg) => {
            let (ids, deltas): (Vec<i64>, Vec<i64>) = per_user.into_iter().unzip();
            diesel::sql_query(
                "UPDATE users SET points = users.points + d.delta \
                 FROM unnest($1::bigint[], $2::bigint[]) AS d(id, delta) WHERE users.id = d.id",
            )
            .bind::<Array<BigInt>, _>(ids)
            .bind::<Array<BigInt>, _>(deltas)
            .execute(pg)?;
        }
        _ => {
            for (user, points) in per_user {
                diesel::update(users::table.find(user))
                    .set(users::points.eq(users::points + points))
                    .execute(conn)?;
            }
        }
    }
    Ok(())
}
