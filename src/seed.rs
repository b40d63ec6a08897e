//! `order-engine seed-demo`: a small catalog to try the engine with.

use crate::config::Settings;
use crate::db::{self, catalog, schema::users};
use crate::domain::time;
use diesel::prelude::*;

/// Creates the demo catalog in an empty database; in one that has users already it changes
/// nothing. Either way it prints what is there.
pub fn seed_demo(settings: &Settings) -> Result<(), String> {
    let pool = db::connect(&settings.database).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let conn = &mut *conn;
    let err = |e: diesel::result::Error| e.to_string();
    let existing: i64 = users::table.count().get_result(conn).map_err(err)?;
    if existing > 0 {
        println!("the database has users already; seed-demo changed nothing");
    } else {
        let now = time::now();
        let chapters = |titles: &[&str]| titles.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        catalog::create_course(
            conn,
            "Rust from Zero",
            19_900,
            true,
            &chapters(&["Ownership", "Traits", "Async"]),
            now,
        )
        .map_err(err)?;
        catalog::create_course(
            conn,
            "Django in Depth",
            9_900,
            true,
            &chapters(&["Models", "Views", "Celery"]),
            now,
        )
        .map_err(err)?;
        catalog::create_course(
            conn,
            "PostgreSQL Internals",
            14_900,
            true,
            &chapters(&["MVCC", "WAL", "Indexes", "Planner"]),
            now,
        )
        .map_err(err)?;
        catalog::create_course(
            conn,
            "Retired: Flash Games",
            4_900,
            false,
            &chapters(&["Timeline"]),
            now,
        )
        .map_err(err)?;
        let alice = catalog::create_user(conn, "alice", 5_000, now).map_err(err)?;
        let bob = catalog::create_user(conn, "bob", 200, now).map_err(err)?;
        let ten_off = catalog::create_coupon(conn, "10 off over 100", 1_000, 10_000, None, now)
            .map_err(err)?;
        let five_off = catalog::create_coupon(conn, "5 off", 500, 0, None, now).map_err(err)?;
        for (user, coupon) in [
            (alice.id, ten_off.id),
            (alice.id, five_off.id),
            (bob.id, five_off.id),
        ] {
            catalog::give_coupon(conn, user, coupon, now).map_err(|e| e.to_string())?;
        }
    }
    println!("courses:");
    for course in catalog::all_courses(conn).map_err(err)? {
        println!(
            "  {:>3}  {:<24} {:>7} cents  on_sale={}  chapters={}",
            course.id,
            course.title,
            course.price_cents,
            course.on_sale,
            course.chapters.len()
        );
    }
    println!("users:");
    let all: Vec<crate::domain::ids::UserId> = users::table
        .select(users::id)
        .order(users::id)
        .load(conn)
        .map_err(err)?;
    for id in all {
        let user = catalog::admin_user(conn, id).map_err(|e| e.to_string())?;
        println!(
            "  {:>3}  {:<8} {:>6} points",
            user.id, user.name, user.points
        );
        for c in user.coupons {
            println!(
                "         user coupon {:>3}: {} ({} off, min spend {}) {}",
                c.user_coupon_id, c.title, c.discount_cents, c.min_spend_cents, c.status
            );
        }
    }
    Ok(())
}
