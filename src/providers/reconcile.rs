//! `reconcile_payments` (SPEC "Schedules and webhooks"): asks each provider about every open
//! trade of a pending order started more than `min_age_secs` ago, and about the trades of
//! orders closed (or paid) within `lookback_secs`, and applies what it reports exactly as a
//! notification — so a lost notification turns neither a payment into a timeout nor a late
//! payment into kept money. Run by a `[[schedules]]` entry or once by `order-engine
//! reconcile`.

use chrono::{NaiveDateTime, TimeDelta};

use super::{apply, Providers, Queried, TradeRef};
use crate::db::journal::Journal;
use crate::db::provider_payments;
use crate::db::transitions::Outcome;
use crate::db::DbConnection;
use crate::domain::order::OutcomeKind;

/// Most trades asked about in one run (the oldest first; the next run goes on).
pub const MAX_PER_RUN: i64 = 1000;

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub asked: usize,
    /// Reports that changed something (a payment, a late payment, a closed trade).
    pub applied: usize,
    /// Still open, unknown to the provider, or already recorded.
    pub unchanged: usize,
    /// Calls or applications that failed (the trade is asked again next run).
    pub failed: usize,
    /// Trades of providers that are off now.
    pub skipped: usize,
}

impl std::fmt::Display for Reconciled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "asked about {} trades: {} applied, {} unchanged, {} failed, {} of providers that are off",
            self.asked, self.applied, self.unchanged, self.failed, self.skipped
        )
    }
}

/// One run. `after` receives each applied outcome (the engine's `after_commit`). `Err` with
/// the summary when a call failed.
pub fn run(
    conn: &mut DbConnection,
    providers: &Providers,
    journal: Journal,
    now: NaiveDateTime,
    min_age_secs: u64,
    lookback_secs: u64,
    after: &dyn Fn(&Outcome),
) -> Result<Reconciled, String> {
    let min_age = TimeDelta::seconds(min_age_secs as i64);
    let lookback = TimeDelta::seconds(lookback_secs as i64);
    let trades = provider_payments::to_reconcile(conn, now, min_age, lookback, MAX_PER_RUN)
        .map_err(|e| format!("cannot list the trades to ask about: {e}"))?;
    let mut done = Reconciled::default();
    for payment in trades {
        let Some(provider) = providers.get(payment.provider) else {
            done.skipped += 1;
            continue;
        };
        done.asked += 1;
        let trade = TradeRef {
            order_no: payment.order_no.to_string(),
            provider_ref: payment.provider_ref.clone(),
        };
        match provider.query(&trade) {
            Ok(Queried::Open | Queried::NotFound) => done.unchanged += 1,
            Ok(Queried::Report(report)) => {
                match apply::apply_report(conn, payment.provider, &report, journal) {
                    Ok(outcome) if outcome.kind == OutcomeKind::Duplicate => done.unchanged += 1,
                    Ok(outcome) => {
                        log::info!(
                            "order {}: reconcile applied {}'s report on trade {} ({:?})",
                            payment.order_no,
                            payment.provider,
                            report.trade_no,
                            outcome.kind
                        );
                        after(&outcome);
                        done.applied += 1;
                    }
                    Err(err) => {
                        log::warn!(
                            "order {}: reconcile could not apply {}'s report: {err}",
                            payment.order_no,
                            payment.provider
                        );
                        done.failed += 1;
                    }
                }
            }
            Err(err) => {
                log::warn!("order {}: reconcile: {err}", payment.order_no);
                done.failed += 1;
            }
        }
    }
    if done.failed > 0 {
        Err(done.to_string())
    } else {
        Ok(done)
    }
}

/// Runs once with the engine's settings (`order-engine reconcile`): its own connection, no
/// actors (effects it queues are picked up by the running engine's sweep).
pub fn run_once(
    settings: &crate::config::Settings,
    min_age_secs: u64,
    lookback_secs: u64,
) -> Result<Reconciled, String> {
    let providers = Providers::from_settings(&settings.providers)?;
    let pool = crate::db::connect(&settings.database).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let journal = Journal {
        enabled: settings.redis.url.is_some() || !settings.webhooks.endpoints.is_empty(),
        webhooks: !settings.webhooks.endpoints.is_empty(),
    };
    run(
        &mut conn,
        &providers,
        journal,
        crate::domain::time::now(),
        min_age_secs,
        lookback_secs,
        &|_| {},
    )
}
