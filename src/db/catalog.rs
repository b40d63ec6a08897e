//! Users, courses with chapters, coupons and users' coupons: the admin catalog and the reads
//! that clients and admins make of it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::*;
use super::schema::*;
use super::{write_transaction, DbConnection};
use crate::db::sql_types::At;
use crate::domain::ids::{CourseId, UserId};
use crate::domain::states::{CouponStatus, OrderStatus};
use crate::error::ApiError;
use crate::per_backend;

pub fn find_user(conn: &mut DbConnection, user_id: UserId) -> QueryResult<Option<User>> {
    users::table
        .find(user_id)
        .select(User::as_select())
        .first(conn)
        .optional()
}

pub fn create_user(
    conn: &mut DbConnection,
    name: &str,
    points: i64,
    now: NaiveDateTime,
) -> QueryResult<User> {
    let values = (
        users::name.eq(name),
        users::points.eq(points),
        users::initial_points.eq(points),
        users::created_at.eq(At(now)),
    );
    per_backend!(
        conn,
        |c| diesel::insert_into(users::table)
            .values(values)
            .returning(User::as_returning())
            .get_result(c),
        mysql | m | {
            diesel::insert_into(users::table)
                .values(values)
                .execute(m)?;
            let id = crate::db::mysql::last_insert_id(m)?;
            users::table.find(id).select(User::as_select()).first(m)
        }
    )
}

pub fn create_course(
    conn: &mut DbConnection,
    title: &str,
    price_cents: i64,
    on_sale: bool,
    chapter_titles: &[String],
    now: NaiveDateTime,
) -> QueryResult<Course> {
    write_transaction(conn, |conn| {
        let values = (
            courses::title.eq(title),
            courses::price_cents.eq(price_cents),
            courses::on_sale.eq(on_sale),
            courses::created_at.eq(At(now)),
        );
        let course_id: CourseId = per_backend!(
            conn,
            |c| diesel::insert_into(courses::table)
                .values(values)
                .returning(courses::id)
                .get_result(c),
            mysql | m | {
                diesel::insert_into(courses::table)
                    .values(values)
                    .execute(m)?;
                crate::db::mysql::last_insert_id(m).map(CourseId)
            }
        )?;
        let rows: Vec<_> = chapter_titles
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    chapters::course_id.eq(course_id),
                    chapters::position.eq(i as i32),
                    chapters::title.eq(t),
                )
            })
            .collect();
        for row in rows {
            diesel::insert_into(chapters::table)
                .values(row)
                .execute(conn)?;
        }
        load_courses(conn, &[course_id])
            .map(|mut found| found.remove(&course_id))?
            .ok_or(diesel::result::Error::NotFound)
    })
}

/// Courses by id, with their chapters in order.
pub fn load_courses(
    conn: &mut DbConnection,
    ids: &[CourseId],
) -> QueryResult<BTreeMap<CourseId, Course>> {
    let rows: Vec<CourseRow> = courses::table
        .filter(courses::id.eq_any(ids))
        .select(CourseRow::as_select())
        .load(conn)?;
    let mut chapters_by_course: BTreeMap<CourseId, Vec<Chapter>> = BTreeMap::new();
    let chapter_rows: Vec<Chapter> = chapters::table
        .filter(chapters::course_id.eq_any(ids))
        .order((chapters::course_id, chapters::position))
        .select(Chapter::as_select())
        .load(conn)?;
    for chapter in chapter_rows {
        chapters_by_course
            .entry(chapter.course_id)
            .or_default()
            .push(chapter);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let course = Course {
                id: row.id,
                title: row.title,
                price_cents: row.price_cents,
                on_sale: row.on_sale,
                chapters: chapters_by_course.remove(&row.id).unwrap_or_default(),
            };
            (course.id, course)
        })
        .collect())
}

/// Every course, by id.
/// Every course, by id.
pub fn all_courses(conn: &mut DbConnection) -> QueryResult<Vec<Course>> {
    let ids: Vec<CourseId> = courses::table
        .select(courses::id)
        .order(courses::id)
        .load(conn)?;
    Ok(load_courses(conn, &ids)?.into_values().collect())
}

/// Up to `fetch` courses older than the course `after` (all when `None`), newest first.
pub fn course_page(
    conn: &mut DbConnection,
    after: Option<i64>,
    fetch: i64,
) -> QueryResult<Vec<Course>> {
    let mut query = courses::table
        .select(courses::id)
        .order(courses::id.desc())
        .limit(fetch)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(courses::id.lt(CourseId(after)));
    }
    let ids: Vec<CourseId> = query.load(conn)?;
    let mut courses = load_courses(conn, &ids)?;
    Ok(ids.iter().filter_map(|id| courses.remove(id)).collect())
}

pub fn set_course_on_sale(
    conn: &mut DbConnection,
    course_id: CourseId,
    on_sale: bool,
) -> Result<Course, ApiError> {
    let updated = diesel::update(courses::table.find(course_id))
        .set(courses::on_sale.eq(on_sale))
        .execute(conn)?;
    if updated == 0 {
        return Err(ApiError::CourseNotFound(course_id));
    }
    load_courses(conn, &[course_id])?
        .remove(&course_id)
        .ok_or(ApiError::CourseNotFound(course_id))
}

pub fn create_coupon(
    conn: &mut DbConnection,
    title: &str,
    discount_cents: i64,
    min_spend_cents: i64,
    valid_until: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> QueryResult<Coupon> {
    let values = (
        coupons::title.eq(title),
        coupons::discount_cents.eq(discount_cents),
        coupons::min_spend_cents.eq(min_spend_cents),
        coupons::valid_until.eq(valid_until),
        coupons::created_at.eq(At(now)),
    );
    per_backend!(
        conn,
        |c| diesel::insert_into(coupons::table)
            .values(values)
            .returning(Coupon::as_returning())
            .get_result(c),
        mysql | m | {
            diesel::insert_into(coupons::table)
                .values(values)
                .execute(m)?;
            let id = crate::db::mysql::last_insert_id(m)?;
            coupons::table.find(id).select(Coupon::as_select()).first(m)
        }
    )
}

/// Gives `user_id` a fresh, unused copy of a coupon.
pub fn give_coupon(
    conn: &mut DbConnection,
    user_id: UserId,
    coupon_id: i64,
    now: NaiveDateTime,
) -> Result<UserCoupon, ApiError> {
    write_transaction(conn, |conn| {
        if find_user(conn, user_id)?.is_none() {
            return Err(ApiError::UserNotFound(user_id));
        }
        let coupon: Coupon = coupons::table
            .find(coupon_id)
            .select(Coupon::as_select())
            .first(conn)
            .optional()?
            .ok_or(ApiError::CouponNotFound(coupon_id))?;
        let values = (
            user_coupons::user_id.eq(user_id),
            user_coupons::coupon_id.eq(coupon_id),
            user_coupons::status.eq(CouponStatus::Unused),
            user_coupons::created_at.eq(At(now)),
        );
        let row: UserCouponRow = per_backend!(
            conn,
            |c| diesel::insert_into(user_coupons::table)
                .values(values)
                .returning(UserCouponRow::as_returning())
                .get_result(c),
            mysql | m | {
                diesel::insert_into(user_coupons::table)
                    .values(values)
                    .execute(m)?;
                let id = crate::db::mysql::last_insert_id(m)?;
                user_coupons::table
                    .find(id)
                    .select(UserCouponRow::as_select())
                    .first(m)
            }
        )?;
        Ok(UserCoupon::new(row, coupon))
    })
}

/// One user coupon with its coupon's terms, whoever owns it.
pub fn find_user_coupon(
    conn: &mut DbConnection,
    user_coupon_id: i64,
) -> QueryResult<Option<UserCoupon>> {
    user_coupons::table
        .inner_join(coupons::table)
        .filter(user_coupons::id.eq(user_coupon_id))
        .select((UserCouponRow::as_select(), Coupon::as_select()))
        .first::<(UserCouponRow, Coupon)>(conn)
        .optional()
        .map(|found| found.map(|(row, coupon)| UserCoupon::new(row, coupon)))
}

/// All of a user's coupons, by id.
pub fn user_coupons_of(conn: &mut DbConnection, user_id: UserId) -> QueryResult<Vec<UserCoupon>> {
    let rows: Vec<(UserCouponRow, Coupon)> = user_coupons::table
        .inner_join(coupons::table)
        .filter(user_coupons::user_id.eq(user_id))
        .order(user_coupons::id)
        .select((UserCouponRow::as_select(), Coupon::as_select()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(row, coupon)| UserCoupon::new(row, coupon))
        .collect())
}

/// The courses a user owns: granted ones and those of any paid order (grants are
/// asynchronous; a paid course cannot be bought twice).
pub fn owned_course_ids(
    conn: &mut DbConnection,
    user_id: UserId,
) -> QueryResult<BTreeSet<CourseId>> {
    let granted: Vec<CourseId> = user_courses::table
        .filter(user_courses::user_id.eq(user_id))
        .select(user_courses::course_id)
        .load(conn)?;
    let paid: Vec<CourseId> = order_items::table
        .inner_join(orders::table)
        .filter(orders::user_id.eq(user_id))
        .filter(orders::status.eq(OrderStatus::Paid))
        .select(order_items::course_id)
        .load(conn)?;
    Ok(granted.into_iter().chain(paid).collect())
}

pub fn me(conn: &mut DbConnection, user_id: UserId) -> Result<Me, ApiError> {
    let user = find_user(conn, user_id)?.ok_or(ApiError::UserNotFound(user_id))?;
    Ok(Me {
        id: user.id,
        name: user.name,
        points: user.points,
        coupons: user_coupons_of(conn, user_id)?,
        course_ids: owned_course_ids(conn, user_id)?.into_iter().collect(),
    })
}

pub fn admin_user(conn: &mut DbConnection, user_id: UserId) -> Result<AdminUser, ApiError> {
    let user = find_user(conn, user_id)?.ok_or(ApiError::UserNotFound(user_id))?;
    let ledger = points_ledger::table
        .filter(points_ledger::user_id.eq(user_id))
        .order(points_ledger::id)
        .select(LedgerRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|row| LedgerEntry {
            order_no: row.order_no,
            kind: row.kind,
            delta: row.delta,
            at: row.created_at,
        })
        .collect();
    let granted: Vec<CourseId> = user_courses::table
        .filter(user_courses::user_id.eq(user_id))
        .order(user_courses::course_id)
        .select(user_courses::course_id)
        .load(conn)?;
    let chapter_rows: Vec<(CourseId, i64)> = user_course_chapters::table
        .filter(user_course_chapters::user_id.eq(user_id))
        .order((
            user_course_chapters::course_id,
            user_course_chapters::chapter_id,
        ))
        .select((
            user_course_chapters::course_id,
            user_course_chapters::chapter_id,
        ))
        .load(conn)?;
    let mut chapter_ids: BTreeMap<CourseId, Vec<i64>> =
        granted.iter().map(|id| (*id, Vec::new())).collect();
    for (course_id, chapter_id) in chapter_rows {
        chapter_ids.entry(course_id).or_default().push(chapter_id);
    }
    Ok(AdminUser {
        id: user.id,
        name: user.name,
        points: user.points,
        initial_points: user.initial_points,
        ledger,
        coupons: user_coupons_of(conn, user_id)?,
        courses: chapter_ids
            .into_iter()
            .map(|(course_id, chapter_ids)| OwnedCourse {
                course_id,
                chapter_ids,
            })
            .collect(),
    })
}
