//! The SPEC invariants, checked through the admin API once the engine has settled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Api;
use crate::parallel;

/// What the load generator knows from the answers it got.
#[derive(Default)]
pub struct Expect {
    /// Every order that was acknowledged (201), with the final status the run implies, if any
    /// (a success callback acknowledged before the deadline -> `paid`, a failure -> `failed`).
    pub acknowledged: HashMap<String, Option<&'static str>>,
    /// Whether every order must have left `pending` (all deadlines passed).
    pub all_closed: bool,
}

/// Waits until no effect is pending and no order is pending past its deadline by more than
/// `grace`; gives up after `timeout`.
pub fn settle(api: &Api, timeout: Duration) -> Result<Value, String> {
    let start = Instant::now();
    loop {
        let a = api.actors()?;
        if a["effects"]["pending"].as_i64() == Some(0) {
            return Ok(a);
        }
        if start.elapsed() > timeout {
            return Err(format!("the engine did not settle within {timeout:?}: {a}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An RFC 3339 timestamp of the API as unix milliseconds.
pub fn ts_ms(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `closed_at - expires_at` of an order, in milliseconds.
pub fn lateness_ms(order: &Value) -> Option<f64> {
    Some((ts_ms(&order["closed_at"])? - ts_ms(&order["expires_at"])?) as f64)
}

/// Reads every order, effect and user through the API and checks SPEC invariants 1-4 (and 6:
/// every acknowledged order exists). Returns the violations and the orders read.
pub fn check(
    api: &Api,
    threads: usize,
    expect: &Expect,
) -> Result<(Vec<String>, Vec<Value>), String> {
    let mut v: Vec<String> = Vec::new();
    let backlog = settle(api, Duration::from_secs(600))?;
    if backlog["effects"]["dead_lettered"].as_i64() != Some(0) {
        v.push(format!("dead-lettered effects: {}", backlog["effects"]));
    }
    let orders = api.admin_list_all("/admin/orders")?;
    let effects = api.admin_list_all("/admin/effects")?;
    let courses = api.admin_list_all("/admin/courses")?;
    let chapters: HashMap<i64, Vec<i64>> = courses
        .iter()
        .map(|c| {
            let ids = c["chapters"]
                .as_array()
                .map(|a| a.iter().filter_map(|ch| ch["id"].as_i64()).collect())
                .unwrap_or_default();
            (c["id"].as_i64().unwrap_or(-1), ids)
        })
        .collect();

    let by_no: HashMap<&str, &Value> = orders
        .iter()
        .filter_map(|o| Some((o["order_no"].as_str()?, o)))
        .collect();
    if by_no.len() != orders.len() {
        v.push("an order number is listed twice".into());
    }
    // 6: nothing acknowledged is lost; the run's expectations hold.
    for (no, want) in &expect.acknowledged {
        match by_no.get(no.as_str()) {
            None => v.push(format!(
                "order {no} was acknowledged but is not in the database"
            )),
            Some(o) => {
                if let Some(want) = want {
                    if o["status"] != *want {
                        v.push(format!(
                            "order {no}: expected {want}, found {}",
                            o["status"]
                        ));
                    }
                }
            }
        }
    }

    // 4: one transition out of pending -> exactly one effect per closed order, of its kind.
    let mut effects_of: HashMap<&str, Vec<&Value>> = HashMap::new();
    for e in &effects {
        if let Some(no) = e["order_no"].as_str() {
            effects_of.entry(no).or_default().push(e);
        }
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    for o in &orders {
        let no = o["order_no"].as_str().unwrap_or("?");
        let status = o["status"].as_str().unwrap_or("?");
        let effs = effects_of.get(no).map(Vec::as_slice).unwrap_or(&[]);
        let want_kind = match status {
            "pending" => None,
            "paid" => Some("grant"),
            "failed" | "cancelled" => Some("refund"),
            other => {
                v.push(format!("order {no}: unknown status {other}"));
                continue;
            }
        };
        match want_kind {
            None => {
                if !effs.is_empty() {
                    v.push(format!("pending order {no} has effects"));
                }
                if expect.all_closed {
                    v.push(format!("order {no} is still pending"));
                } else if ts_ms(&o["expires_at"]).is_some_and(|e| now_ms > e + 2_000) {
                    v.push(format!(
                        "order {no} is pending more than 2 s past its deadline"
                    ));
                }
            }
            Some(kind) => {
                let n = effs.iter().filter(|e| e["kind"] == kind).count();
                if n != 1 || effs.len() != 1 {
                    v.push(format!(
                        "order {no} ({status}) has {} effects, {n} of kind {kind}",
                        effs.len()
                    ));
                }
                if effs.iter().any(|e| e["status"] != "done") {
                    v.push(format!("order {no}: an effect is not done"));
                }
            }
        }
        let paid = status == "paid";
        let closed = matches!(status, "failed" | "cancelled");
        if paid == o["paid_at"].is_null() || closed == o["closed_at"].is_null() {
            v.push(format!(
                "order {no} ({status}): paid_at/closed_at do not match"
            ));
        }
    }

    // 1-3, user by user.
    let mut users: BTreeSet<i64> = orders
        .iter()
        .filter_map(|o| o["user_id"].as_i64())
        .collect();
    users.extend(
        effects
            .iter()
            .filter_map(|e| e["order"]["user_id"].as_i64()),
    );
    let users: Vec<i64> = users.into_iter().collect();
    let mut orders_of: HashMap<i64, Vec<&Value>> = HashMap::new();
    for o in &orders {
        orders_of
            .entry(o["user_id"].as_i64().unwrap_or(-1))
            .or_default()
            .push(o);
    }
    let fetched = parallel::map(threads.clamp(1, 16), users.len(), |i| {
        api.admin_get_ok(&format!("/admin/users/{}", users[i]))
    });
    for (i, user) in fetched.into_iter().enumerate() {
        let user = user?;
        let id = users[i];
        let mine = orders_of.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        check_user(&mut v, id, &user, mine, &chapters);
    }
    Ok((v, orders))
}

fn check_user(
    v: &mut Vec<String>,
    id: i64,
    user: &Value,
    orders: &[&Value],
    chapters: &HashMap<i64, Vec<i64>>,
) {
    let ledger = user["ledger"].as_array().cloned().unwrap_or_default();
    let sum: i64 = ledger.iter().filter_map(|l| l["delta"].as_i64()).sum();
    let (points, initial) = (user["points"].as_i64(), user["initial_points"].as_i64());
    if points != initial.map(|i| i + sum) {
        v.push(format!(
            "user {id}: points {points:?} != initial {initial:?} + ledger {sum}"
        ));
    }
    let mut rows: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for l in &ledger {
        rows.entry((
            l["order_no"].as_str().unwrap_or("?"),
            l["kind"].as_str().unwrap_or("?"),
        ))
        .or_default()
        .push(l["delta"].as_i64().unwrap_or(0));
    }
    let known: BTreeSet<&str> = orders
        .iter()
        .filter_map(|o| o["order_no"].as_str())
        .collect();
    for (no, _) in rows.keys() {
        if !known.contains(no) {
            v.push(format!(
                "user {id}: ledger row for an order not theirs: {no}"
            ));
        }
    }
    let coupons = user["coupons"].as_array().cloned().unwrap_or_default();
    let coupon_by_id: HashMap<i64, &Value> = coupons
        .iter()
        .filter_map(|c| Some((c["user_coupon_id"].as_i64()?, c)))
        .collect();
    let status_of: HashMap<&str, &str> = orders
        .iter()
        .filter_map(|o| Some((o["order_no"].as_str()?, o["status"].as_str()?)))
        .collect();
    let mut must_own: BTreeMap<i64, ()> = BTreeMap::new();
    for o in orders {
        let no = o["order_no"].as_str().unwrap_or("?");
        let status = o["status"].as_str().unwrap_or("?");
        let used = o["points_used"].as_i64().unwrap_or(0);
        let spend = rows.get(&(no, "spend")).cloned().unwrap_or_default();
        let refund = rows.get(&(no, "refund")).cloned().unwrap_or_default();
        let want_spend: Vec<i64> = if used > 0 { vec![-used] } else { vec![] };
        if spend != want_spend {
            v.push(format!(
                "order {no}: spend rows {spend:?}, expected {want_spend:?}"
            ));
        }
        let closed = matches!(status, "failed" | "cancelled");
        let want_refund: Vec<i64> = if closed && used > 0 {
            vec![used]
        } else {
            vec![]
        };
        if refund != want_refund {
            v.push(format!(
                "order {no} ({status}): refund rows {refund:?}, expected {want_refund:?}"
            ));
        }
        if let Some(cid) = o["user_coupon_id"].as_i64() {
            match coupon_by_id.get(&cid) {
                None => v.push(format!("order {no}: coupon {cid} is not the user's")),
                Some(c) => {
                    let held_by_this = c["order_no"].as_str() == Some(no);
                    let ok = match status {
                        "pending" => held_by_this && c["status"] == "locked",
                        "paid" => held_by_this && c["status"] == "used",
                        _ => !held_by_this,
                    };
                    if !ok {
                        v.push(format!("order {no} ({status}): coupon {cid} is {}", c));
                    }
                }
            }
        }
        if status == "paid" {
            for item in o["items"].as_array().into_iter().flatten() {
                if let Some(course) = item["course_id"].as_i64() {
                    must_own.insert(course, ());
                }
            }
        }
    }
    for c in &coupons {
        let cstatus = c["status"].as_str().unwrap_or("?");
        let order = c["order_no"].as_str();
        let ok = match (cstatus, order) {
            ("unused", None) => true,
            ("locked", Some(no)) => status_of.get(no) == Some(&"pending"),
            ("used", Some(no)) => status_of.get(no) == Some(&"paid"),
            _ => false,
        };
        if !ok {
            v.push(format!("user {id}: coupon {c} does not match its order"));
        }
    }
    // 3: grants exactly for paid orders' courses, with every chapter, once.
    let owned = user["courses"].as_array().cloned().unwrap_or_default();
    let mut seen = BTreeSet::new();
    for c in &owned {
        let course = c["course_id"].as_i64().unwrap_or(-1);
        if !seen.insert(course) {
            v.push(format!("user {id}: course {course} granted twice"));
        }
        if !must_own.contains_key(&course) {
            v.push(format!(
                "user {id}: course {course} granted without a paid order"
            ));
        }
        let got: Vec<i64> = c["chapter_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let mut want = chapters.get(&course).cloned().unwrap_or_default();
        want.sort_unstable();
        if got != want {
            v.push(format!(
                "user {id}: course {course} chapters {got:?}, expected {want:?}"
            ));
        }
    }
    for course in must_own.keys() {
        if !seen.contains(course) {
            v.push(format!("user {id}: paid course {course} not granted"));
        }
    }
}
