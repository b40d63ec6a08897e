//! Rows as Diesel reads them, and the SPEC's API objects built from them. Field names are the
//! SPEC's; every documented key is always present (`null` when it does not apply).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::schema::*;
use super::sql_types::At;
use crate::domain::ids::{CourseId, OrderNo, UserId};
use crate::domain::states::{CloseReason, CouponStatus, LedgerKind, OrderStatus};
use crate::domain::time::{serde_ts, serde_ts_opt};

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = users)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub points: i64,
    pub initial_points: i64,
    #[serde(skip)]
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = courses)]
pub struct CourseRow {
    pub id: CourseId,
    pub title: String,
    pub price_cents: i64,
    pub on_sale: bool,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = chapters)]
pub struct Chapter {
    pub id: i64,
    #[serde(skip)]
    pub course_id: CourseId,
    #[serde(skip)]
    pub position: i32,
    pub title: String,
}

/// The SPEC's Course object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Course {
    pub id: CourseId,
    pub title: String,
    pub price_cents: i64,
    pub on_sale: bool,
    pub chapters: Vec<Chapter>,
}

/// A coupon template, as admins create it.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = coupons)]
pub struct Coupon {
    pub id: i64,
    pub title: String,
    pub discount_cents: i64,
    pub min_spend_cents: i64,
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true)]
    pub valid_until: Option<NaiveDateTime>,
    #[serde(skip)]
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_coupons)]
pub struct UserCouponRow {
    pub id: i64,
    pub user_id: UserId,
    pub coupon_id: i64,
    pub status: CouponStatus,
    pub order_no: Option<OrderNo>,
    pub created_at: NaiveDateTime,
}

/// The SPEC's User coupon object: a user's copy of a coupon and its state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserCoupon {
    pub user_coupon_id: i64,
    pub user_id: UserId,
    pub coupon_id: i64,
    pub title: String,
    pub discount_cents: i64,
    pub min_spend_cents: i64,
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true)]
    pub valid_until: Option<NaiveDateTime>,
    pub status: CouponStatus,
    #[schema(required = true)]
    pub order_no: Option<OrderNo>,
}

impl UserCoupon {
    pub fn new(row: UserCouponRow, coupon: Coupon) -> Self {
        Self {
            user_coupon_id: row.id,
            user_id: row.user_id,
            coupon_id: coupon.id,
            title: coupon.title,
            discount_cents: coupon.discount_cents,
            min_spend_cents: coupon.min_spend_cents,
            valid_until: coupon.valid_until,
            status: row.status,
            order_no: row.order_no,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders)]
pub struct OrderRow {
    pub order_no: OrderNo,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub total_cents: i64,
    pub discount_cents: i64,
    pub points_used: i64,
    pub payable_cents: i64,
    pub user_coupon_id: Option<i64>,
    // An instant inserted is an `At` (crate::db::sql_types); an absent one is NULL, as the
    // column's default is.
    #[diesel(serialize_as = At)]
    pub created_at: NaiveDateTime,
    #[diesel(serialize_as = At)]
    pub expires_at: NaiveDateTime,
    #[diesel(treat_none_as_default_value = false)]
    pub paid_at: Option<NaiveDateTime>,
    #[diesel(treat_none_as_default_value = false)]
    pub closed_at: Option<NaiveDateTime>,
    pub close_reason: Option<CloseReason>,
    pub trade_no: Option<String>,
    pub owner_node: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_items)]
pub struct OrderItemRow {
    pub order_no: OrderNo,
    pub position: i32,
    pub course_id: CourseId,
    pub price_cents: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderItem {
    pub course_id: CourseId,
    pub price_cents: i64,
}

/// The SPEC's Order object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub order_no: OrderNo,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub discount_cents: i64,
    pub points_used: i64,
    pub payable_cents: i64,
    #[schema(required = true)]
    pub user_coupon_id: Option<i64>,
    #[serde(with = "serde_ts")]
    pub created_at: NaiveDateTime,
    #[serde(with = "serde_ts")]
    pub expires_at: NaiveDateTime,
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true)]
    pub paid_at: Option<NaiveDateTime>,
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true)]
    pub closed_at: Option<NaiveDateTime>,
    #[schema(required = true)]
    pub close_reason: Option<CloseReason>,
    #[schema(required = true)]
    pub trade_no: Option<String>,
}

impl Order {
    /// Joins a row with its items (already in position order).
    pub fn new(row: OrderRow, items: Vec<OrderItemRow>) -> Self {
        Self {
            order_no: row.order_no,
            user_id: row.user_id,
            status: row.status,
            items: items
                .into_iter()
                .map(|i| OrderItem {
                    course_id: i.course_id,
                    price_cents: i.price_cents,
                })
                .collect(),
            total_cents: row.total_cents,
            discount_cents: row.discount_cents,
            points_used: row.points_used,
            payable_cents: row.payable_cents,
            user_coupon_id: row.user_coupon_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            paid_at: row.paid_at,
            closed_at: row.closed_at,
            close_reason: row.close_reason,
            trade_no: row.trade_no,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = points_ledger)]
pub struct LedgerRow {
    pub id: i64,
    pub user_id: UserId,
    pub order_no: OrderNo,
    pub kind: LedgerKind,
    pub delta: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub order_no: OrderNo,
    pub kind: LedgerKind,
    pub delta: i64,
    #[serde(with = "serde_ts")]
    pub at: NaiveDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OwnedCourse {
    pub course_id: CourseId,
    pub chapter_ids: Vec<i64>,
}

/// `GET /admin/users/{id}`: a user with everything the invariants are checked against.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminUser {
    pub id: UserId,
    pub name: String,
    pub points: i64,
    pub initial_points: i64,
    pub ledger: Vec<LedgerEntry>,
    pub coupons: Vec<UserCoupon>,
    pub courses: Vec<OwnedCourse>,
}

/// `GET /api/me`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub id: UserId,
    pub name: String,
    pub points: i64,
    pub coupons: Vec<UserCoupon>,
    pub course_ids: Vec<CourseId>,
}
