//! The grant effect of a paid order: its user gets each of its courses and every chapter of
//! each. Rows already there are kept (unique (user, course) and (user, chapter)), so a replay
//! is a no-op.

use std::collections::BTreeMap;

use crate::db::sql_types::At;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::*;
use crate::db::{lock_users, sorted_unique, DbConnection, UserLock};
use crate::domain::ids::OrderNo;
use crate::per_backend;

/// Most rows in one multi-row `INSERT` (4 parameters a row; an order may hold several courses
/// of many chapters).
const INSERT_CHUNK: usize = 1000;

/// The grants of `mine` (orders with a pending grant, locked).
pub fn apply(conn: &mut DbConnection, mine: &[OrderNo], now: NaiveDateTime) -> QueryResult<()> {
    let items: Vec<(OrderNo, i64, i64)> = order_items::table
        .inner_join(orders::table)
        .filter(order_items::order_no.eq_any(mine))
        .select((
            order_items::order_no,
            orders::user_id,
            order_items::course_id,
        ))
        .load(conn)?;
    // (user, course) -> the order that gives it; sorted, so that every batch inserts (and
    // takes its unique-key and foreign-key locks) in the same order as any other.
    let mut courses: BTreeMap<(i64, i64), &str> = BTreeMap::new();
    for (no, user, course) in &items {
        courses.entry((*user, *course)).or_insert(no.as_str());
    }
    let course_ids = sorted_unique(courses.keys().map(|(_, course)| *course));
    let mut chapters_of: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (course, chapter) in chapters::table
        .filter(chapters::course_id.eq_any(&course_ids))
        .order((chapters::course_id, chapters::id))
        .select((chapters::course_id, chapters::id))
        .load::<(i64, i64)>(conn)?
    {
        chapters_of.entry(course).or_default().push(chapter);
    }
    let users = sorted_unique(courses.keys().map(|(user, _)| *user));
    lock_users(conn, &users, UserLock::KeyShare)?;
    let course_rows: Vec<_> = courses
        .iter()
        .map(|((user, course), no)| {
            (
                user_courses::user_id.eq(*user),
                user_courses::course_id.eq(*course),
                user_courses::order_no.eq(Some(*no)),
                user_courses::created_at.eq(At(now)),
            )
        })
        .collect();
    for chunk in course_rows.chunks(INSERT_CHUNK) {
        per_backend!(conn, |c| diesel::insert_into(user_courses::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    let chapter_rows: Vec<_> = courses
        .keys()
        .flat_map(|(user, course)| {
            chapters_of
                .get(course)
                .into_iter()
                .flatten()
                .map(move |chapter| {
                    (
                        user_course_chapters::user_id.eq(*user),
                        user_course_chapters::course_id.eq(*course),
                        user_course_chapters::chapter_id.eq(*chapter),
                        user_course_chapters::created_at.eq(At(now)),
                    )
                })
        })
        .collect();
    for chunk in chapter_rows.chunks(INSERT_CHUNK) {
        per_backend!(conn, |c| diesel::insert_into(user_course_chapters::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    Ok(())
}
