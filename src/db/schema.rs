// @generated automatically by Diesel CLI.

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    admin_sessions (token_hash) {
        #[max_length = 64]
        token_hash -> Varchar,
        #[max_length = 64]
        csrf_token -> Varchar,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    chapters (id) {
        id -> Int8,
        course_id -> Int8,
        position -> Int4,
        title -> Text,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    coupons (id) {
        id -> Int8,
        title -> Text,
        discount_cents -> Int8,
        min_spend_cents -> Int8,
        valid_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    courses (id) {
        id -> Int8,
        title -> Text,
        price_cents -> Int8,
        on_sale -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    effects (id) {
        id -> Int8,
        #[max_length = 64]
        order_no -> Varchar,
        kind -> Text,
        status -> Text,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        next_attempt_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    idempotency_keys (user_id, idempotency_key) {
        user_id -> Int8,
        #[max_length = 255]
        idempotency_key -> Varchar,
        #[max_length = 64]
        request_hash -> Varchar,
        response_status -> Nullable<Int4>,
        response_body -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    order_events (id) {
        id -> Int8,
        #[max_length = 64]
        order_no -> Varchar,
        kind -> Text,
        at -> Timestamp,
        data -> Text,
        fanned_out -> Bool,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    order_items (order_no, position) {
        #[max_length = 64]
        order_no -> Varchar,
        position -> Int4,
        course_id -> Int8,
        price_cents -> Int8,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    orders (order_no) {
        #[max_length = 64]
        order_no -> Varchar,
        user_id -> Int8,
        status -> Text,
        total_cents -> Int8,
        discount_cents -> Int8,
        points_used -> Int8,
        payable_cents -> Int8,
        user_coupon_id -> Nullable<Int8>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        paid_at -> Nullable<Timestamp>,
        closed_at -> Nullable<Timestamp>,
        close_reason -> Nullable<Text>,
        #[max_length = 255]
        trade_no -> Nullable<Varchar>,
        #[max_length = 64]
        owner_node -> Nullable<Varchar>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    payment_events (id) {
        id -> Int8,
        #[max_length = 64]
        order_no -> Varchar,
        #[max_length = 255]
        trade_no -> Varchar,
        code -> Int8,
        amount_cents -> Int8,
        provider_paid_at -> Nullable<Timestamp>,
        received_at -> Timestamp,
        outcome -> Text,
        provider -> Text,
        refunded_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    payments (id) {
        id -> Int8,
        #[max_length = 64]
        order_no -> Varchar,
        provider -> Text,
        status -> Text,
        pay_url -> Nullable<Text>,
        code_url -> Nullable<Text>,
        #[max_length = 255]
        provider_ref -> Nullable<Varchar>,
        expires_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    points_ledger (id) {
        id -> Int8,
        user_id -> Int8,
        #[max_length = 64]
        order_no -> Varchar,
        kind -> Text,
        delta -> Int8,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    schedule_runs (id) {
        id -> Int8,
        #[max_length = 64]
        name -> Varchar,
        fire_at -> Timestamp,
        status -> Text,
        #[max_length = 64]
        node_id -> Varchar,
        attempts -> Int4,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        lease_until -> Timestamp,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    schedules (name) {
        #[max_length = 64]
        name -> Varchar,
        spec -> Text,
        next_fire_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    user_coupons (id) {
        id -> Int8,
        user_id -> Int8,
        coupon_id -> Int8,
        status -> Text,
        #[max_length = 64]
        order_no -> Nullable<Varchar>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    user_course_chapters (id) {
        id -> Int8,
        user_id -> Int8,
        course_id -> Int8,
        chapter_id -> Int8,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    user_courses (id) {
        id -> Int8,
        user_id -> Int8,
        course_id -> Int8,
        #[max_length = 64]
        order_no -> Nullable<Varchar>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    users (id) {
        id -> Int8,
        name -> Text,
        points -> Int8,
        initial_points -> Int8,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::Timestamp;

    webhook_deliveries (id) {
        id -> Int8,
        event_id -> Int8,
        url -> Text,
        #[max_length = 64]
        order_no -> Varchar,
        kind -> Text,
        body -> Text,
        status -> Text,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        next_attempt_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(chapters -> courses (course_id));
diesel::joinable!(effects -> orders (order_no));
diesel::joinable!(idempotency_keys -> users (user_id));
diesel::joinable!(order_items -> courses (course_id));
diesel::joinable!(order_items -> orders (order_no));
diesel::joinable!(orders -> users (user_id));
diesel::joinable!(payment_events -> orders (order_no));
diesel::joinable!(payments -> orders (order_no));
diesel::joinable!(points_ledger -> orders (order_no));
diesel::joinable!(points_ledger -> users (user_id));
diesel::joinable!(user_coupons -> coupons (coupon_id));
diesel::joinable!(user_coupons -> users (user_id));
diesel::joinable!(user_course_chapters -> chapters (chapter_id));
diesel::joinable!(user_course_chapters -> courses (course_id));
diesel::joinable!(user_course_chapters -> users (user_id));
diesel::joinable!(user_courses -> courses (course_id));
diesel::joinable!(user_courses -> orders (order_no));
diesel::joinable!(user_courses -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    admin_sessions,
    chapters,
    coupons,
    courses,
    effects,
    idempotency_keys,
    order_events,
    order_items,
    orders,
    payment_events,
    payments,
    points_ledger,
    schedule_runs,
    schedules,
    user_coupons,
    user_course_chapters,
    user_courses,
    users,
    webhook_deliveries,
);
