//! Stripe's adapter (to be written: see [`super::Provider`]).

use super::{
    Closed, Notified, NotifyError, NotifyRequest, Provider, ProviderError, ProviderName, Queried,
    RefundRequest, StartRequest, Started, TradeRef,
};
use crate::config::StripeSettings;

pub struct Stripe {
    #[allow(dead_code)]
    settings: StripeSettings,
    #[allow(dead_code)]
    agent: ureq::Agent,
}

impl Stripe {
    /// The adapter for `settings`; `timeout` bounds every call.
    pub fn new(settings: &StripeSettings, timeout: std::time::Duration) -> Result<Self, String> {
        Ok(Stripe {
            settings: settings.clone(),
            agent: super::agent(timeout),
        })
    }
}

impl Provider for Stripe {
    fn name(&self) -> ProviderName {
        ProviderName::Stripe
    }
    fn start(&self, _request: &StartRequest) -> Result<Started, ProviderError> {
        Err(ProviderError::Refused {
            provider: self.name(),
            reason: "not built yet".into(),
        })
    }
    fn verify(&self, _request: &NotifyRequest<'_>) -> Result<Notified, NotifyError> {
        Err(NotifyError::Unauthentic("not built yet".into()))
    }
    fn close(&self, _trade: &TradeRef) -> Result<Closed, ProviderError> {
        Err(ProviderError::Refused {
            provider: self.name(),
            reason: "not built yet".into(),
        })
    }
    fn refund(&self, _refund: &RefundRequest) -> Result<(), ProviderError> {
        Err(ProviderError::Refused {
            provider: self.name(),
            reason: "not built yet".into(),
        })
    }
    fn query(&self, _trade: &TradeRef) -> Result<Queried, ProviderError> {
        Err(ProviderError::Refused {
            provider: self.name(),
            reason: "not built yet".into(),
        })
    }
}
