//! Pending orders inserted straight into the database before the engine starts (expiry, burst,
//! memory, recovery): one SQL statement per table (`generate_series` on PostgreSQL, a
//! recursive CTE on SQLite and MySQL), consistent with every foreign key and SPEC invariant: each order
//! buys one course, `(user, course)` pairs are distinct, its points are spent with a `spend`
//! ledger row and the user's balance lowered, no coupon.

use diesel::connection::SimpleConnection;
use order_engine::db::DbConnection;

use crate::Backend;

pub const PRICE_CENTS: i64 = 1000;
pub const INITIAL_POINTS: i64 = 1_000_000;

pub struct Seed {
    pub users: i64,
    pub courses: i64,
    pub orders: i64,
    /// Points spent by each order (0: no ledger rows).
    pub points: i64,
    /// Unix milliseconds of `created_at`.
    pub created_ms: i64,
    /// Order `i` (0-based) expires at `first_deadline_ms + i * spread_ms / orders`.
    pub first_deadline_ms: i64,
    pub spread_ms: i64,
}

impl Seed {
    /// `users` users and just enough courses for `orders` distinct (user, course) pairs.
    pub fn new(orders: i64, users: i64) -> Self {
        let users = users.clamp(1, orders.max(1));
        Self {
            users,
            courses: (orders + users - 1) / users, // i64::div_ceil is unstable
            orders,
            points: 0,
            created_ms: chrono::Utc::now().timestamp_millis(),
            first_deadline_ms: 0,
            spread_ms: 0,
        }
    }
}

/// A timestamp literal from a unix-milliseconds SQL expression, in the format Diesel stores
/// `NaiveDateTime` with on each backend.
fn ts(backend: Backend, ms: &str) -> String {
    match backend {
        Backend::Postgres => {
            format!("(TIMESTAMP '1970-01-01 00:00:00' + ({ms}) * INTERVAL '1 millisecond')")
        }
        // Diesel writes "%F %T%.f": no fraction when it is zero, else milliseconds here.
        Backend::Sqlite => format!(
            "(strftime('%Y-%m-%d %H:%M:%S', ({ms}) / 1000, 'unixepoch') || \
             CASE WHEN ({ms}) % 1000 = 0 THEN '' ELSE printf('.%03d', ({ms}) % 1000) END)"
        ),
        // DATETIME(3) columns; whole microseconds, so nothing is rounded.
        Backend::Mysql => {
            format!("TIMESTAMPADD(MICROSECOND, ({ms}) * 1000, TIMESTAMP '1970-01-01 00:00:00')")
        }
    }
}

/// `SELECT <cols> FROM <the integers 1..=n as i>`.
fn series(backend: Backend, n: i64, cols: &str) -> String {
    match backend {
        Backend::Postgres => format!("SELECT {cols} FROM generate_series(1::bigint, {n}) AS s(i)"),
        Backend::Sqlite | Backend::Mysql => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
             SELECT {cols} FROM s"
        ),
    }
}

/// The order number of order `i` (1-based SQL expression): 32 lowercase hex digits of a UUIDv7
/// (version nibble 7, RFC 4122 variant nibble 8, `i` in the last 15 digits), the form of the
/// numbers the engine itself makes (`domain::order::new_order_no`), so the actors keep seeded
/// orders exactly as they keep placed ones and `/admin/orders` accepts them as cursors.
fn order_no(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "'00000000000070008' || lpad(to_hex(i), 15, '0')",
        Backend::Sqlite => "printf('00000000000070008%015x', i)",
        Backend::Mysql => "CONCAT('00000000000070008', LOWER(LPAD(HEX(i), 15, '0')))",
    }
}

/// `a / b` of integers, rounded down (MySQL's `/` gives a decimal).
fn div(backend: Backend, a: &str, b: &str) -> String {
    match backend {
        Backend::Mysql => format!("({a}) DIV ({b})"),
        _ => format!("({a}) / ({b})"),
    }
}

/// `'<prefix>' || i` (MySQL's `||` is `OR`).
fn named(backend: Backend, prefix: &str, i: &str) -> String {
    match backend {
        Backend::Mysql => format!("CONCAT('{prefix}', {i})"),
        _ => format!("'{prefix}' || {i}"),
    }
}

pub fn sql(backend: Backend, s: &Seed) -> String {
    let (u, c, n, p) = (s.users, s.courses, s.orders, s.points);
    let created = ts(backend, &s.created_ms.to_string());
    let expires = ts(
        backend,
        &format!(
            "{} + {}",
            s.first_deadline_ms,
            div(
                backend,
                &format!("(i - 1) * {}", s.spread_ms),
                &n.to_string()
            )
        ),
    );
    let no = order_no(backend);
    let truth = match backend {
        Backend::Postgres | Backend::Mysql => "true",
        Backend::Sqlite => "1",
    };
    let mut out = String::from("BEGIN;\n");
    out += &format!(
        "INSERT INTO users (id, name, points, initial_points, created_at) {};\n",
        series(
            backend,
            u,
            &format!(
                "i, {}, {INITIAL_POINTS}, {INITIAL_POINTS}, {created}",
                named(backend, "user ", "i")
            )
        )
    );
    out += &format!(
        "INSERT INTO courses (id, title, price_cents, on_sale, created_at) {};\n",
        series(
            backend,
            c,
            &format!(
                "i, {}, {PRICE_CENTS}, {truth}, {created}",
                named(backend, "course ", "i")
            )
        )
    );
    out += &format!(
        "INSERT INTO chapters (course_id, position, title) {};\n",
        series(
            backend,
            c * 2,
            &format!(
                "{} + 1, (i - 1) % 2, {}",
                div(backend, "i - 1", "2"),
                named(backend, "chapter ", "((i - 1) % 2 + 1)")
            )
        )
    );
    out += &format!(
        "INSERT INTO orders (order_no, user_id, status, total_cents, discount_cents, points_used, \
         payable_cents, user_coupon_id, created_at, expires_at, owner_node) {};\n",
        series(
            backend,
            n,
            &format!(
                "{no}, (i - 1) % {u} + 1, 'pending', {PRICE_CENTS}, 0, {p}, {}, NULL, {created}, \
                 {expires}, NULL",
                PRICE_CENTS - p
            )
        )
    );
    out += &format!(
        "INSERT INTO order_items (order_no, position, course_id, price_cents) {};\n",
        series(
            backend,
            n,
            &format!(
                "{no}, 0, {} + 1, {PRICE_CENTS}",
                div(backend, "i - 1", &u.to_string())
            )
        )
    );
    if p > 0 {
        out += &format!(
            "INSERT INTO points_ledger (user_id, order_no, kind, delta, created_at) {};\n",
            series(
                backend,
                n,
                &format!("(i - 1) % {u} + 1, {no}, 'spend', {}, {created}", -p)
            )
        );
        out += &format!(
            "UPDATE users SET points = initial_points - {p} * \
             (SELECT count(*) FROM orders WHERE orders.user_id = users.id);\n"
        );
    }
    if backend == Backend::Postgres {
        for t in ["users", "courses", "chapters"] {
            out += &format!(
                "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}));\n"
            );
        }
    }
    out += "COMMIT;\n";
    if backend == Backend::Postgres {
        out += "ANALYZE;\n";
    }
    out
}

pub fn run(conn: &mut DbConnection, backend: Backend, s: &Seed) -> Result<(), String> {
    if backend == Backend::Mysql {
        // A recursive CTE stops after `max_recursive_iterations` rows on MariaDB (1000 by
        // default on 10.11), after `cte_max_recursion_depth` on MySQL 8.
        let rows = s.orders.max(s.courses * 2).max(s.users) + 1;
        conn.batch_execute(&format!("SET @@session.max_recursive_iterations = {rows}"))
            .or_else(|_| {
                conn.batch_execute(&format!("SET @@session.cte_max_recursion_depth = {rows}"))
            })
            .map_err(|e| format!("raising the recursion limit: {e}"))?;
    }
    conn.batch_execute(&sql(backend, s))
        .map_err(|e| format!("seeding {} orders: {e}", s.orders))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_covers_every_order_with_distinct_pairs() {
        let s = Seed::new(1_000_000, 1000);
        assert_eq!((s.users, s.courses), (1000, 1000));
        let s = Seed::new(10, 3);
        assert_eq!(s.courses, 4);
        let sql = sql(Backend::Sqlite, &s);
        assert!(sql.contains("WITH RECURSIVE"));
        assert!(sql.contains("printf('00000000000070008%015x', i)"));
    }

    #[test]
    fn mysql_seed_speaks_mysql() {
        let mut s = Seed::new(10, 3);
        s.points = 10;
        s.spread_ms = 1000;
        let sql = sql(Backend::Mysql, &s);
        // `||` is OR there and `/` a decimal division: CONCAT and DIV instead.
        assert!(!sql.contains("||"), "{sql}");
        assert!(!sql.contains(" / "), "{sql}");
        assert!(sql.contains("CONCAT('user ', i)"), "{sql}");
        assert!(sql.contains("(i - 1) DIV (3)"), "{sql}");
        assert!(sql.contains("TIMESTAMPADD(MICROSECOND"), "{sql}");
        assert!(sql.contains("LOWER(LPAD(HEX(i), 15, '0'))"), "{sql}");
    }
}
