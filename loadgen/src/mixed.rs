//! `mixed`: placements, payment callbacks (successes and failures, some sent twice) and
//! timeouts at once, as production sees them.
//!
//! `--clients` place `--orders` as fast as they are answered, on an engine whose payment window
//! is `--payment-timeout-secs`; as each 201 comes back the order's fate is drawn from its index:
//! `--pay-percent` get a success callback, `--fail-percent` a failure, the rest none and time
//! out. A callback is due a uniform `0..=--callback-delay-ms` after the 201 (a duplicate, for
//! `--duplicate-percent` of them, up to a second later) and `--callback-clients` payment-provider
//! threads send them when due. So once the first deadlines pass, placements, callbacks and
//! timeouts run together until the placements end; the run then waits for the last deadline,
//! for every effect to be done, and checks the SPEC invariants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Api;
use crate::invariants::{self, Expect};
use crate::parallel::{self, DelayQueue};
use crate::stats::{dist, Report};
use crate::{
    add_cpu, closed_orders, create_catalog, db_cpu, now_ms, place_all, place_catalog_sizes,
    record_errors, timeout_lateness, watch_settling, Ctx, Placed, COUPON_EVERY,
};

const SUCCESS: i64 = 100_000;
const FAILURE: i64 = 100_001;

/// What the run does with a placed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fate {
    Pay,
    Fail,
    Expire,
}

impl Fate {
    fn status(self) -> &'static str {
        match self {
            Fate::Pay => "paid",
            Fate::Fail => "failed",
            Fate::Expire => "cancelled",
        }
    }
}

/// The order's fate and callback times, drawn from its placement index (the same in every run).
struct Plan {
    pay_percent: u64,
    fail_percent: u64,
    duplicate_percent: u64,
    delay_ms: u64,
}

impl Plan {
    fn fate(&self, index: usize) -> Fate {
        match mix(index as u64, 1) % 100 {
            p if p < self.pay_percent => Fate::Pay,
            p if p < self.pay_percent + self.fail_percent => Fate::Fail,
            _ => Fate::Expire,
        }
    }

    /// The callback's delay after the 201 and, when it is sent twice, the duplicate's.
    fn delays(&self, index: usize) -> (Duration, Option<Duration>) {
        let first = mix(index as u64, 2) % (self.delay_ms + 1);
        let twice = mix(index as u64, 3) % 100 < self.duplicate_percent;
        let second = twice.then(|| first + mix(index as u64, 4) % 1001);
        (
            Duration::from_millis(first),
            second.map(Duration::from_millis),
        )
    }
}

/// splitmix64: a well-spread hash of (value, salt), so fates do not follow users or courses.
fn mix(value: u64, salt: u64) -> u64 {
    let mut z = value
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Callback {
    order_no: String,
    fate: Fate,
    amount: i64,
}

/// A callback the engine acknowledged (200).
struct Acknowledged {
    order_no: String,
    sent: Instant,
    answered: Instant,
    /// Unix milliseconds of the 200, compared with the order's `expires_at`.
    answered_ms: i64,
    latency_ms: f64,
    /// How long after its due time it was sent (the provider threads falling behind).
    lag_ms: f64,
}

/// One payment-provider thread: sends each callback when it is due, until the queue closes.
fn provider(api: &Api, queue: &DelayQueue<Callback>) -> (Vec<Acknowledged>, Vec<String>) {
    let (mut acknowledged, mut errors) = (Vec::new(), Vec::new());
    while let Some((due, cb)) = queue.pop() {
        let sent = Instant::now();
        let code = if cb.fate == Fate::Pay {
            SUCCESS
        } else {
            FAILURE
        };
        // The same trade_no, code and amount for a duplicate: SPEC says 200, no change.
        let answer = api.callback(&cb.order_no, &format!("t{}", cb.order_no), code, cb.amount);
        let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
        match answer {
            Ok((200, _)) => acknowledged.push(Acknowledged {
                order_no: cb.order_no,
                sent,
                answered: Instant::now(),
                answered_ms: now_ms(),
                latency_ms,
                lag_ms: sent.duration_since(due).as_secs_f64() * 1000.0,
            }),
            Ok((s, b)) => errors.push(format!("callback {}: {s} {b}", cb.order_no)),
            Err(e) => errors.push(format!("callback {}: {e}", cb.order_no)),
        }
    }
    (acknowledged, errors)
}

pub fn mixed(ctx: &Ctx) -> Result<Report, String> {
    let a = &ctx.args;
    let n = ctx.orders();
    let plan = Plan {
        pay_percent: a.pay_percent,
        fail_percent: a.fail_percent,
        duplicate_percent: a.duplicate_percent,
        delay_ms: a.callback_delay_ms,
    };
    if plan.pay_percent + plan.fail_percent > 100 || plan.duplicate_percent > 100 {
        return Err("--pay-percent + --fail-percent and --duplicate-percent must be <= 100".into());
    }
    let timeout = Duration::from_secs(a.payment_timeout_secs);
    if plan.delay_ms >= timeout.as_millis() as u64 {
        eprintln!(
            "note: --callback-delay-ms reaches the deadline; late callbacks expect no status"
        );
    }
    let mut r = Report::new("mixed", a.backend.name());
    let (engine, api) = ctx.start_engine(a.payment_timeout_secs, "mixed")?;
    let (users, courses) = place_catalog_sizes(ctx, n);
    let cat = create_catalog(
        &api,
        a.clients,
        users,
        courses,
        courses.div_ceil(COUPON_EVERY),
    )?;
    ctx.pause();
    r.add("orders", n as f64, "");
    r.add("clients", a.clients as f64, "");
    r.add("callback_clients", a.callback_clients as f64, "");
    r.add("payment_timeout", timeout.as_millis() as f64, "ms");

    let queue = DelayQueue::default();
    let on_placed = |o: &Placed| {
        let fate = plan.fate(o.index);
        if fate == Fate::Expire {
            return;
        }
        let now = Instant::now();
        let (first, second) = plan.delays(o.index);
        for delay in std::iter::once(first).chain(second) {
            let cb = Callback {
                order_no: o.order_no.clone(),
                fate,
                amount: o.payable,
            };
            queue.push(now + delay, cb);
        }
    };
    eprintln!(
        "mixed: placing {n} orders with {} clients, callbacks from {} (payment window {} s)",
        a.clients,
        a.callback_clients,
        timeout.as_secs()
    );
    let cpu0 = (engine.cpu_secs(), db_cpu());
    let (p, sent) = std::thread::scope(|s| {
        let callbacks = s.spawn(|| parallel::each(a.callback_clients, |_| provider(&api, &queue)));
        let p = place_all(
            &api,
            &engine,
            &cat,
            a.clients,
            n as usize,
            Some(COUPON_EVERY),
            &on_placed,
        );
        queue.close();
        (p, callbacks.join())
    });
    let sent = sent.map_err(|_| "a callback thread panicked")?;
    let placing_ended_ms = now_ms();
    eprintln!("mixed: placements done after {:.1} s", p.wall.as_secs_f64());

    // Placement: over the whole phase, and from the first deadlines on (the first orders were
    // answered at about 0 s, so their deadlines pass at about `timeout`), while callbacks and
    // timeouts run alongside.
    let wall = p.wall.as_secs_f64();
    p.report(&mut r);
    let expiring = p.latencies_from(timeout);
    if p.wall > timeout {
        let window = (p.wall - timeout).as_secs_f64();
        r.add(
            "place_throughput_while_expiring",
            expiring.len() as f64 / window,
            "orders/s",
        );
        r.add_dist("place_latency_while_expiring", dist(expiring), "ms");
    } else {
        r.note(format!(
            "placements ended after {wall:.1} s, before the first deadlines: raise --orders"
        ));
    }
    add_cpu(&mut r, "place", p.engine_cpu, p.db_cpu, wall, a.backend);
    record_errors(&mut r, "place", &p.errors);

    // Callbacks: the 200s, from the first sent to the last answered.
    let (mut acknowledged, mut errors) = (Vec::new(), Vec::new());
    for (ack, errs) in sent {
        acknowledged.extend(ack);
        errors.extend(errs);
    }
    if let (Some(first), Some(last)) = (
        acknowledged.iter().map(|c| c.sent).min(),
        acknowledged.iter().map(|c| c.answered).max(),
    ) {
        let window = last.duration_since(first).as_secs_f64().max(0.001);
        r.add("callbacks", acknowledged.len() as f64, "");
        r.add(
            "callback_throughput",
            acknowledged.len() as f64 / window,
            "callbacks/s",
        );
    }
    r.add_dist(
        "callback_latency",
        dist(acknowledged.iter().map(|c| c.latency_ms).collect()),
        "ms",
    );
    let placing_ended = p.started + p.wall;
    r.add_dist(
        "callback_latency_while_placing",
        dist(
            acknowledged
                .iter()
                .filter(|c| c.sent < placing_ended)
                .map(|c| c.latency_ms)
                .collect(),
        ),
        "ms",
    );
    let lag = dist(acknowledged.iter().map(|c| c.lag_ms).collect());
    r.add_dist("callback_send_lag", lag, "ms");
    // Slow callbacks tie up the provider threads: past a point the callbacks go out late, the
    // load is no longer the one asked for, and some miss their deadlines.
    if let Some(lag) = lag.filter(|d| d.p99 > 1000.0) {
        r.note(format!(
            "the provider threads fell behind (callback send lag p99 {:.0} ms): raise \
             --callback-clients for the callbacks to go out on time",
            lag.p99
        ));
    }
    record_errors(&mut r, "callback", &errors);

    // What the answers imply: a callback acknowledged before the deadline decided the order
    // (a duplicate acknowledged first decided it too); one acknowledged only after it leaves
    // either outcome possible (a late payment of a timed-out order, or paid in the last
    // moment); an order without callbacks times out.
    let mut first_ack: HashMap<&str, i64> = HashMap::new();
    for c in &acknowledged {
        let first = first_ack.entry(c.order_no.as_str()).or_insert(i64::MAX);
        *first = (*first).min(c.answered_ms);
    }
    let mut expect = Expect {
        acknowledged: HashMap::new(),
        all_closed: true,
    };
    let mut late_callbacks = 0;
    let mut expected_timeouts = Vec::new();
    for o in &p.orders {
        let fate = plan.fate(o.index);
        let want = match (fate, first_ack.get(o.order_no.as_str())) {
            (Fate::Expire, _) => {
                expected_timeouts.push(o.order_no.as_str());
                Some(fate.status())
            }
            (_, Some(answered)) if *answered < o.expires_ms => Some(fate.status()),
            (_, Some(_)) => {
                late_callbacks += 1;
                None
            }
            // Not acknowledged: an error recorded above.
            (_, None) => None,
        };
        expect.acknowledged.insert(o.order_no.clone(), want);
    }
    r.add("callbacks_after_deadline", late_callbacks as f64, "");

    // Every deadline passes, then everything settles.
    let last_deadline = p.orders.iter().map(|o| o.expires_ms).max().unwrap_or(0);
    while now_ms() < last_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let give_up = last_deadline + a.settle_secs as i64 * 1000;
    let settled = watch_settling(ctx, &mut r, &api, n, give_up, false)?;
    if let Some(closed) = settled.closed_at {
        r.add(
            "all_closed_after_last_deadline",
            (closed - last_deadline) as f64,
            "ms",
        );
    }
    if let Some(done) = settled.settled_at {
        r.add(
            "all_settled_after_last_deadline",
            (done - last_deadline) as f64,
            "ms",
        );
    }
    let wall = p.started.elapsed().as_secs_f64();
    let cpu = (engine.cpu_secs() - cpu0.0, db_cpu() - cpu0.1);
    add_cpu(&mut r, "mixed", cpu.0, cpu.1, wall, a.backend);

    let orders = closed_orders(ctx, &mut r, &api, &expect, &settled)?;
    let by_no: HashMap<&str, &Value> = orders
        .iter()
        .filter_map(|o| Some((o["order_no"].as_str()?, o)))
        .collect();
    for no in expected_timeouts {
        if let Some(o) = by_no.get(no) {
            if o["close_reason"] != "timeout" {
                r.violations.push(format!(
                    "order {no} had no callback but ended {} / {}",
                    o["status"], o["close_reason"]
                ));
            }
        }
    }
    for status in ["paid", "failed", "cancelled"] {
        let count = orders.iter().filter(|o| o["status"] == status).count();
        r.add(&format!("orders_{status}"), count as f64, "");
    }
    let lateness = timeout_lateness(&mut r, &orders, false);
    r.add_dist("lateness", dist(lateness), "ms");
    // The deadlines that passed while placements went on (the rest passed on a quieter engine).
    let while_placing = orders
        .iter()
        .filter(|o| o["close_reason"] == "timeout")
        .filter(|o| invariants::ts_ms(&o["expires_at"]).is_some_and(|e| e <= placing_ended_ms))
        .filter_map(invariants::lateness_ms)
        .collect();
    r.add_dist("lateness_while_placing", dist(while_placing), "ms");
    drop(engine);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_follow_the_percentages() {
        let plan = Plan {
            pay_percent: 50,
            fail_percent: 10,
            duplicate_percent: 20,
            delay_ms: 5000,
        };
        let mut count = HashMap::new();
        let mut twice = 0;
        for i in 0..10_000 {
            *count.entry(plan.fate(i)).or_insert(0) += 1;
            let (first, second) = plan.delays(i);
            assert!(first <= Duration::from_millis(5000));
            if let Some(second) = second {
                assert!(second >= first && second <= first + Duration::from_secs(1));
                twice += 1;
            }
        }
        let share = |f| count[&f] as f64 / 10_000.0;
        assert!((share(Fate::Pay) - 0.5).abs() < 0.03);
        assert!((share(Fate::Fail) - 0.1).abs() < 0.02);
        assert!((share(Fate::Expire) - 0.4).abs() < 0.03);
        assert!((twice as f64 / 10_000.0 - 0.2).abs() < 0.02);
    }
}
