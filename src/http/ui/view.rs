//! How the dashboard shows values: money, instants, time left, the deadline chart, the nodes.
//! Pure functions the templates call (`crate::http::ui::view::money(...)`), unit-tested here.
//! Arguments are taken through `Borrow` so a template may pass a field or a reference.

use std::borrow::Borrow;

use chrono::NaiveDateTime;

use crate::actors::DeadlineBuckets;
use crate::domain::time;

/// Cents as a decimal amount with two places (`1500` -> `15.00`, `-5` -> `-0.05`).
pub fn money(cents: impl Borrow<i64>) -> String {
    let cents = *cents.borrow();
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// An instant as the API writes it, or an em dash when there is none.
pub fn when(at: impl Borrow<Option<NaiveDateTime>>) -> String {
    match at.borrow() {
        Some(at) => at_text(at),
        None => "—".to_string(),
    }
}

/// An instant as the API writes it (`2026-11-26T12:00:00.123Z`).
pub fn at_text(at: impl Borrow<NaiveDateTime>) -> String {
    time::format(at.borrow())
}

/// An instant for a table cell, to the second in UTC (`2026-11-26 12:00:00`); the page of
/// the row shows it exactly.
pub fn short(at: impl Borrow<NaiveDateTime>) -> String {
    at.borrow().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// [`short`], or an em dash when there is none.
pub fn short_or_dash(at: impl Borrow<Option<NaiveDateTime>>) -> String {
    match at.borrow() {
        Some(at) => short(at),
        None => "—".to_string(),
    }
}

/// Time left as `m:ss.s` (or `h:mm:ss` past an hour); `0:00.0` once due.
pub fn time_left(remaining_ms: impl Borrow<i64>) -> String {
    let ms = (*remaining_ms.borrow()).max(0);
    let total_secs = ms / 1000;
    let (hours, minutes, secs) = (total_secs / 3600, total_secs / 60 % 60, total_secs % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{secs:02}")
    } else {
        format!("{minutes}:{secs:02}.{}", ms % 1000 / 100)
    }
}

/// Text for an optional value (`—` for none).
pub fn or_dash<T: std::fmt::Display>(value: impl Borrow<Option<T>>) -> String {
    match value.borrow() {
        Some(value) => value.to_string(),
        None => "—".to_string(),
    }
}

/// Whether `url` may be a link's `href`: an `https://` or `http://` URL. Anything else a
/// provider might send (`javascript:`, a WeChat `weixin://` code URL) is shown as text only.
pub fn is_web_url(url: impl AsRef<str>) -> bool {
    let url = url.as_ref();
    ["https://", "http://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    })
}

/// One bar of the deadline chart, in the SVG's user units.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub count: usize,
    /// The bar's window in minutes from now: `0–1`, `1–2`, ...
    pub label: String,
    /// Where its count is written (above the bar).
    pub count_y: u32,
}

/// The chart of deadlines due in the coming windows: bars scaled to the busiest window.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub bars: Vec<Bar>,
    pub width: u32,
    pub height: u32,
    /// The baseline under the bars.
    pub axis_y: u32,
    pub later: usize,
    pub total: usize,
}

impl Chart {
    pub const WIDTH: u32 = 640;
    pub const HEIGHT: u32 = 172;
    const TOP: u32 = 22;
    const BASE: u32 = 150;
    const SLOT_GAP: u32 = 10;

    pub fn of(buckets: &DeadlineBuckets) -> Self {
        let slots = buckets.counts.len().max(1) as u32;
        let slot = Self::WIDTH / slots;
        let busiest = buckets.counts.iter().copied().max().unwrap_or(0).max(1);
        let minutes = buckets.width_ms as f64 / 60_000.0;
        let bars = buckets
            .counts
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let full = f64::from(Self::BASE - Self::TOP);
                // A window with deadlines always shows at least a sliver.
                let height = match count {
                    0 => 0,
                    n => ((n as f64 / busiest as f64) * full).round().max(2.0) as u32,
                };
                let label = format!(
                    "{}–{}",
                    minutes_text(minutes * i as f64),
                    minutes_text(minutes * (i + 1) as f64)
                );
                Bar {
                    x: i as u32 * slot + Self::SLOT_GAP / 2,
                    y: Self::BASE - height,
                    width: slot - Self::SLOT_GAP,
                    height,
                    count,
                    label,
                    count_y: Self::BASE - height - 6,
                }
            })
            .collect::<Vec<_>>();
        Self {
            total: bars.iter().map(|b| b.count).sum::<usize>() + buckets.later,
            bars,
            width: Self::WIDTH,
            height: Self::HEIGHT,
            axis_y: Self::BASE,
            later: buckets.later,
        }
    }
}

/// A window edge in minutes: `1`, `2`, `0.5`.
fn minutes_text(minutes: f64) -> String {
    let rounded = (minutes * 10.0).round() / 10.0;
    format!("{rounded}")
}

/// A row of the overview's nodes table, from `GET /admin/actors`'s `nodes` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub node_id: String,
    pub this_node: bool,
    /// `up`, `down`, or `unknown` (no Redis to see other nodes' heartbeats).
    pub alive: &'static str,
    pub pending_orders: i64,
    pub live_actors: String,
    pub started_at: String,
    pub adopted_orders: i64,
}

impl NodeRow {
    pub fn of(node: &serde_json::Value) -> Self {
        let text = |key: &str| match &node[key] {
            serde_json::Value::Null => "—".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Self {
            node_id: text("node_id"),
            this_node: node["this_node"].as_bool().unwrap_or(false),
            alive: match node["alive"].as_bool() {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            },
            pending_orders: node["pending_orders"].as_i64().unwrap_or(0),
            live_actors: text("live_actors"),
            started_at: text("started_at"),
            adopted_orders: node["adopted_orders"].as_i64().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_has_two_places() {
        assert_eq!(money(1500), "15.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-5), "-0.05");
        assert_eq!(money(0), "0.00");
        assert_eq!(money(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn table_instants_are_to_the_second() {
        let at = time::parse("2026-11-26T12:00:00.123Z").unwrap();
        assert_eq!(short(at), "2026-11-26 12:00:00");
        assert_eq!(short_or_dash(Some(at)), "2026-11-26 12:00:00");
        assert_eq!(short_or_dash(None), "—");
        assert_eq!(when(Some(at)), "2026-11-26T12:00:00.123Z");
    }

    #[test]
    fn only_web_urls_are_links() {
        assert!(is_web_url("https://checkout.stripe.com/c/pay/cs_test_1"));
        assert!(is_web_url("HTTP://127.0.0.1:8080/gateway.do?a=1"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("weixin://wxpay/bizpayurl?pr=abc"));
        assert!(!is_web_url("https:"));
        assert!(!is_web_url(""));
    }

    #[test]
    fn time_left_counts_down_to_zero() {
        assert_eq!(time_left(1_799_950), "29:59.9");
        assert_eq!(time_left(61_000), "1:01.0");
        assert_eq!(time_left(999), "0:00.9");
        assert_eq!(time_left(-20), "0:00.0");
        assert_eq!(time_left(3_723_000), "1:02:03");
    }

    #[test]
    fn the_chart_scales_to_the_busiest_minute() {
        let buckets = DeadlineBuckets {
            width_ms: 60_000,
            counts: vec![4, 0, 1, 0],
            later: 2,
        };
        let chart = Chart::of(&buckets);
        assert_eq!(chart.bars.len(), 4);
        assert_eq!(chart.total, 7);
        let full = Chart::BASE - Chart::TOP;
        assert_eq!(chart.bars[0].height, full);
        assert_eq!(chart.bars[1].height, 0);
        assert_eq!(chart.bars[2].height, (f64::from(full) / 4.0).round() as u32);
        assert_eq!(chart.bars[0].label, "0–1");
        assert_eq!(chart.bars[2].label, "2–3");
        assert!(chart.bars.iter().all(|b| b.x + b.width <= Chart::WIDTH));
        let empty = Chart::of(&DeadlineBuckets {
            width_ms: 60_000,
            counts: vec![0; 10],
            later: 0,
        });
        assert!(empty.bars.iter().all(|b| b.height == 0));
    }
}
