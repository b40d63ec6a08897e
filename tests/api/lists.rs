//! Every list (SPEC §Objects, List): a `limit` outside 1-100, an unknown parameter, or a cursor
//! the list could not have issued is 400 invalid_request; a cursor of the right shape is a
//! keyset position, whether or not a row has it.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

/// Cursors no list issues: not numbers, not canonical numbers, out of range, empty.
const GARBAGE: [&str; 17] = [
    "garbage",
    "",
    "!!",
    "-1",
    "0",
    "%2B1",
    "01",
    "1.0",
    "%201",
    "1%20",
    "1e3",
    "0x10",
    "9223372036854775808",
    "99999999999999999999999",
    "%00",
    "null",
    "%E2%91%A0",
];

/// Limits outside 1-100 or not written as the engine writes numbers.
const BAD_LIMITS: [&str; 12] = [
    "0",
    "101",
    "-1",
    "%2B5",
    "05",
    "5.0",
    "",
    "x",
    "1e1",
    "%205",
    "99999999999999999999",
    "1,2",
];

/// A page of `path` (whose query may be empty) with `extra` appended.
fn get(app: &TestApp, path: &str, extra: &str) -> Resp {
    let sep = if path.contains('?') { '&' } else { '?' };
    app.admin("GET", &format!("{path}{sep}{extra}"), None)
}

#[track_caller]
fn assert_refused(resp: &Resp, what: &str) {
    assert_eq!(
        (resp.status, resp.error_code()),
        (400, "invalid_request"),
        "{what}: {}",
        resp.text
    );
    assert_keys(&resp.json["error"], &["code", "message"]);
}

/// Follows `next_after` through pages of one, checking each cursor the list issues is taken.
fn walk(app: &TestApp, path: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut page = get(app, path, "limit=1").assert_status(200).clone();
    loop {
        rows.extend(page["data"].as_array().expect("data").iter().cloned());
        if page["has_more"] != true {
            assert_eq!(page["next_after"], Value::Null, "{path}: {page}");
            return rows;
        }
        let cursor = match &page["next_after"] {
            Value::String(s) => s.clone(),
            other => panic!("{path}: next_after {other} is not a string"),
        };
        page = get(app, path, &format!("limit=1&after={cursor}"))
            .assert_status(200)
            .clone();
        assert!(rows.len() < 100, "{path}: paging does not end");
    }
}

on_both_backends! {
    /// `/admin/orders`, `/admin/effects` and `/admin/late-payments`: each takes the cursors it
    /// issues and refuses any other with 400; the same for `limit`. A cursor of the right shape
    /// that no row has is a position, not an error.
    fn lists_refuse_cursors_they_could_not_have_issued(app) {
        let (_, token) = app.user_with_token(1_000);
        let paid = app.place_ok(&token, &[app.course(500)], None, 10);
        app.pay(&paid);
        let cancelled = app.place_ok(&token, &[app.course(500)], None, 10);
        let cancelled_no = cancelled["order_no"].as_str().unwrap().to_string();
        app.as_user(&token, "POST", &format!("/api/orders/{cancelled_no}/cancel"), None)
            .assert_status(200);
        app.wait_effects_done(&cancelled_no);
        app.wait_effects_done(paid["order_no"].as_str().unwrap());
        assert_eq!(app.callback(&cancelled_no, &trade_no(), SUCCESS, 1).status, 200);
        assert_eq!(app.callback(&cancelled_no, &trade_no(), SUCCESS, 2).status, 200);
        app.place_ok(&token, &[app.course(500)], None, 0);

        let order_no = paid["order_no"].as_str().unwrap().to_string();
        let lists = ["/admin/orders", "/admin/effects", "/admin/late-payments",
                     "/admin/effects?status=done", "/admin/orders?status=paid"];
        let before: Vec<Value> = lists.iter().map(|l| get(app, l, "limit=100").assert_status(200).clone()).collect();
        for list in lists {
            assert!(!walk(app, list).is_empty(), "{list} is empty");
        }
        assert_eq!(walk(app, "/admin/orders").len(), 3);
        assert_eq!(walk(app, "/admin/late-payments").len(), 2);

        // Refused by every list.
        let mut everywhere: Vec<String> = GARBAGE.iter().map(|s| s.to_string()).collect();
        everywhere.extend([
            order_no.to_uppercase(),
            format!("{order_no}0"),
            order_no[1..].to_string(),
            uuid::Uuid::parse_str(&order_no).unwrap().hyphenated().to_string(),
            uuid::Uuid::new_v4().simple().to_string(),
            "g".repeat(32),
        ]);
        for list in lists {
            for cursor in &everywhere {
                assert_refused(&get(app, list, &format!("after={cursor}")), &format!("{list} after={cursor:?}"));
                assert_refused(&get(app, list, &format!("limit=1&after={cursor}")), &format!("{list} after={cursor:?}"));
            }
            for limit in BAD_LIMITS {
                assert_refused(&get(app, list, &format!("limit={limit}")), &format!("{list} limit={limit:?}"));
            }
            assert_refused(&get(app, list, "after=1&after=2"), &format!("{list} two cursors"));
            assert_refused(&get(app, list, "cursor=1"), &format!("{list} unknown parameter"));
            for limit in ["1", "100"] {
                get(app, list, &format!("limit={limit}")).assert_status(200);
            }
        }
        // Each list's cursors are its own: an id is not an order number, nor the reverse.
        for cursor in ["1", "42", "9223372036854775807"] {
            assert_refused(&get(app, "/admin/orders", &format!("after={cursor}")), cursor);
        }
        for list in ["/admin/effects", "/admin/late-payments"] {
            assert_refused(&get(app, list, &format!("after={order_no}")), list);
        }

        // Right shape, no such row: a keyset position.
        let oldest = get(app, "/admin/orders", "after=00000000000070008000000000000000").assert_status(200).clone();
        assert_eq!((&oldest["data"], &oldest["has_more"]), (&json!([]), &json!(false)));
        let newest = get(app, "/admin/orders", "after=ffffffffffff7fffbfffffffffffffff").assert_status(200).clone();
        assert_eq!(newest["data"], before[0]["data"]);
        for list in ["/admin/effects", "/admin/late-payments"] {
            let page = get(app, list, "after=1").assert_status(200).clone();
            assert_eq!(page["data"], json!([]), "{list}");
            let page = get(app, list, "after=9223372036854775807").assert_status(200).clone();
            assert_eq!(page["data"], get(app, list, "limit=100").assert_status(200)["data"], "{list}");
        }

        let after: Vec<Value> = lists.iter().map(|l| get(app, l, "limit=100").assert_status(200).clone()).collect();
        assert_eq!(after, before, "a refused page changed something");
    }
}

on_both_backends! {
    /// The course lists are Lists like the others: newest first, `limit` (default 50) and a
    /// cursor that walks every course exactly once; a cursor they could not have issued, a bad
    /// `limit` and unknown parameters are 400.
    fn course_lists_page_newest_first(app) {
        let (_, token) = app.user_with_token(0);
        let mut ids: Vec<i64> = (0..53).map(|i| app.course(100 + i)).collect();
        ids.reverse();
        let admin = |query: &str| app.admin("GET", &format!("/admin/courses{query}"), None);
        let client = |query: &str| app.as_user(&token, "GET", &format!("/api/courses{query}"), None);
        for (name, list) in [("/admin/courses", &admin as &dyn Fn(&str) -> Resp), ("/api/courses", &client)] {
            let first = list("").assert_status(200).clone();
            let page_ids = |page: &Value| -> Vec<i64> {
                page["data"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect()
            };
            assert_eq!(page_ids(&first), ids[..50], "{name}: the default page is the newest 50");
            assert_eq!((&first["has_more"], &first["next_after"]), (&json!(true), &json!(ids[49].to_string())), "{name}");
            let rest = list(&format!("?after={}", ids[49])).assert_status(200).clone();
            assert_eq!(page_ids(&rest), ids[50..], "{name}");
            assert_eq!((&rest["has_more"], &rest["next_after"]), (&json!(false), &Value::Null), "{name}");
            let titles: Vec<&str> = first["data"][0]["chapters"].as_array().unwrap().iter().map(|c| c["title"].as_str().unwrap()).collect();
            assert_eq!(titles, ["one", "two"], "{name}: courses come with their chapters");

            let mut walked = Vec::new();
            let mut query = "?limit=7".to_string();
            loop {
                let page = list(&query).assert_status(200).clone();
                walked.extend(page_ids(&page));
                match page["next_after"].as_str() {
                    Some(after) => query = format!("?limit=7&after={after}"),
                    None => break,
                }
            }
            assert_eq!(walked, ids, "{name}: limit=7 pages walk every course once, newest first");
            assert_eq!(page_ids(list(&format!("?after={}", ids[52])).assert_status(200)), Vec::<i64>::new(), "{name}: after the oldest");

            for cursor in GARBAGE {
                assert_refused(&list(&format!("?after={cursor}")), &format!("{name} after={cursor:?}"));
            }
            for limit in BAD_LIMITS {
                assert_refused(&list(&format!("?limit={limit}")), &format!("{name} limit={limit:?}"));
            }
            assert_refused(&list("?colour=red"), &format!("{name} unknown parameter"));
        }
    }
}
