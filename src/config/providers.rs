//! `[providers]`, `[providers.alipay]`, `[providers.wechatpay]`, `[providers.stripe]` (SPEC
//! "Payment providers"). A provider is on when its section holds its required keys; a section
//! with some of them and not others is a config error naming the first missing key, so a
//! half-configured provider never starts silently off. Keys (PEM text or `@path`) are read and
//! parsed here, so a bad key stops start-up.

use super::{ConfigError, Layers};
use crate::providers::keys::{read_key_text, SigningKey, VerifyingKey};

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Seconds before the order's deadline at which the provider's own expiry is set, so a
    /// payment the provider accepts reaches the engine in time; starting a payment with less
    /// than this left is 409 `payment_window_closed`.
    pub expire_margin_secs: u64,
    /// Timeout of every call to a provider, in milliseconds.
    pub request_timeout_ms: u64,
    /// The engine's public base URL (`https://pay.example.com`): every `notify_url` is this plus
    /// the provider's route. Required when a provider is on.
    pub public_base_url: String,
    pub alipay: Option<AlipaySettings>,
    pub wechatpay: Option<WechatpaySettings>,
    pub stripe: Option<StripeSettings>,
}

/// `[providers.alipay]`: on when `app_id`, `app_private_key` and `alipay_public_key` are set.
#[derive(Debug, Clone)]
pub struct AlipaySettings {
    pub app_id: String,
    /// The app's RSA private key (PEM or base64 DER text, already read from `@path`).
    pub app_private_key: String,
    /// Alipay's RSA public key, to check notifications and responses.
    pub alipay_public_key: String,
    /// `https://openapi.alipay.com/gateway.do` (sandbox:
    /// `https://openapi-sandbox.dl.alipaydev.com/gateway.do`).
    pub gateway_url: String,
}

/// `[providers.wechatpay]`: on when every key but `api_base` is set.
#[derive(Debug, Clone)]
pub struct WechatpaySettings {
    pub mch_id: String,
    pub app_id: String,
    /// The 32-byte APIv3 key notifications' resources are encrypted with.
    pub apiv3_key: String,
    /// The merchant's API private key (`apiclient_key.pem`).
    pub merchant_private_key: String,
    /// The serial number of the merchant's API certificate.
    pub merchant_serial: String,
    /// WeChat Pay's public key (the "WeChat Pay public key" of the merchant platform).
    pub platform_public_key: String,
    /// Its id (`PUB_KEY_ID_...`), which `Wechatpay-Serial` names.
    pub platform_serial: String,
    /// `https://api.mch.weixin.qq.com`.
    pub api_base: String,
}

/// `[providers.stripe]`: on when `secret_key` and `webhook_secret` are set.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `sk_test_...` / `sk_live_...` (or a restricted key).
    pub secret_key: String,
    /// The webhook endpoint's signing secret, `whsec_...`.
    pub webhook_secret: String,
    /// `https://api.stripe.com`.
    pub api_base: String,
}

/// The sections a provider's keys live in.
pub(super) const SECTIONS: [&str; 4] = [
    "providers",
    "providers.alipay",
    "providers.wechatpay",
    "providers.stripe",
];

/// Reads a provider section's keys: `None` when none of `required` is set; an error naming the
/// first missing one when some are.
fn section(
    l: &mut Layers,
    section: &str,
    required: &[&str],
) -> Result<Option<Vec<String>>, ConfigError> {
    let mut values = Vec::with_capacity(required.len());
    for key in required {
        values.push(l.string(section, key, "")?);
    }
    if values.iter().all(|v| v.trim().is_empty()) {
        return Ok(None);
    }
    if let Some(i) = values.iter().position(|v| v.trim().is_empty()) {
        return Err(ConfigError::new(
            format!("{section}.{}", required[i]),
            format!("required when {section} is configured"),
        ));
    }
    Ok(Some(values))
}

fn signing_key(section: &str, key: &str, value: &str) -> Result<String, ConfigError> {
    let name = format!("{section}.{key}");
    let text = read_key_text(value).map_err(|e| ConfigError::new(&name, e))?;
    SigningKey::parse(&text).map_err(|e| ConfigError::new(&name, e))?;
    Ok(text)
}

fn verifying_key(section: &str, key: &str, value: &str) -> Result<String, ConfigError> {
    let name = format!("{section}.{key}");
    let text = read_key_text(value).map_err(|e| ConfigError::new(&name, e))?;
    VerifyingKey::parse(&text).map_err(|e| ConfigError::new(&name, e))?;
    Ok(text)
}

fn base_url(
    l: &mut Layers,
    section: &str,
    key: &str,
    default: &str,
) -> Result<String, ConfigError> {
    let url = l.string(section, key, default)?;
    super::check_webhook_url(&url).map_err(|e| ConfigError::new(format!("{section}.{key}"), e))?;
    Ok(url.trim_end_matches('/').to_string())
}

pub(super) fn load(l: &mut Layers, currency: &str) -> Result<ProviderSettings, ConfigError> {
    let expire_margin_secs = l.integer("providers", "expire_margin_secs", 60, 0, 86_400)?;
    let request_timeout_ms = l.integer("providers", "request_timeout_ms", 5_000, 1, 600_000)?;
    let public_base_url = l.string("providers", "public_base_url", "")?;
    // Read whether or not the provider is on, so a file holding them is never "unknown key".
    let gateway_url = base_url(
        l,
        "providers.alipay",
        "gateway_url",
        "https://openapi.alipay.com/gateway.do",
    )?;
    let wechatpay_base = base_url(
        l,
        "providers.wechatpay",
        "api_base",
        "https://api.mch.weixin.qq.com",
    )?;
    let stripe_base = base_url(l, "providers.stripe", "api_base", "https://api.stripe.com")?;

    let alipay = match section(
        l,
        "providers.alipay",
        &["app_id", "app_private_key", "alipay_public_key"],
    )? {
        None => None,
        Some(v) => Some(AlipaySettings {
            app_id: v[0].clone(),
            app_private_key: signing_key("providers.alipay", "app_private_key", &v[1])?,
            alipay_public_key: verifying_key("providers.alipay", "alipay_public_key", &v[2])?,
            gateway_url,
        }),
    };
    let wechatpay = match section(
        l,
        "providers.wechatpay",
        &[
            "mch_id",
            "app_id",
            "apiv3_key",
            "merchant_private_key",
            "merchant_serial",
            "platform_public_key",
            "platform_serial",
        ],
    )? {
        None => None,
        Some(v) => {
            if v[2].len() != 32 {
                return Err(ConfigError::new(
                    "providers.wechatpay.apiv3_key",
                    "must be the 32-character APIv3 key",
                ));
            }
            Some(WechatpaySettings {
                mch_id: v[0].clone(),
                app_id: v[1].clone(),
                apiv3_key: v[2].clone(),
                merchant_private_key: signing_key(
                    "providers.wechatpay",
                    "merchant_private_key",
                    &v[3],
                )?,
                merchant_serial: v[4].clone(),
                platform_public_key: verifying_key(
                    "providers.wechatpay",
                    "platform_public_key",
                    &v[5],
                )?,
                platform_serial: v[6].clone(),
                api_base: wechatpay_base,
            })
        }
    };
    let stripe = match section(l, "providers.stripe", &["secret_key", "webhook_secret"])? {
        None => None,
        Some(v) => {
            if !v[1].starts_with("whsec_") {
                return Err(ConfigError::new(
                    "providers.stripe.webhook_secret",
                    "must be the endpoint's signing secret (whsec_...)",
                ));
            }
            Some(StripeSettings {
                secret_key: v[0].clone(),
                webhook_secret: v[1].clone(),
                api_base: stripe_base,
            })
        }
    };
    for (name, on) in [
        ("alipay", alipay.is_some()),
        ("wechatpay", wechatpay.is_some()),
    ] {
        if on && currency != "CNY" {
            return Err(ConfigError::new(
                format!("providers.{name}"),
                format!("takes CNY only, and pricing.currency is {currency}"),
            ));
        }
    }
    let any = alipay.is_some() || wechatpay.is_some() || stripe.is_some();
    let public_base_url = public_base_url.trim_end_matches('/').to_string();
    if any {
        super::check_webhook_url(&public_base_url).map_err(|e| {
            ConfigError::new(
                "providers.public_base_url",
                format!("{e} (the base of every notify_url, required when a provider is on)"),
            )
        })?;
    }
    Ok(ProviderSettings {
        expire_margin_secs,
        request_timeout_ms,
        public_base_url,
        alipay,
        wechatpay,
        stripe,
    })
}

impl ProviderSettings {
    /// The `notify_url` of a provider's route.
    pub fn notify_url(&self, route: &str) -> String {
        format!("{}{route}", self.public_base_url)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    fn fixture(name: &str) -> String {
        format!(
            "@{}/tests/fixtures/providers/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn load(pairs: &[(&str, String)]) -> Result<Settings, crate::config::ConfigError> {
        Settings::load_from(
            None,
            pairs
                .iter()
                .map(|(k, v)| (format!("ORDER_ENGINE__{k}"), v.clone())),
        )
    }

    fn alipay() -> Vec<(&'static str, String)> {
        vec![
            (
                "PROVIDERS__PUBLIC_BASE_URL",
                "https://pay.example.com/".into(),
            ),
            ("PROVIDERS__ALIPAY__APP_ID", "2021000000000000".into()),
            (
                "PROVIDERS__ALIPAY__APP_PRIVATE_KEY",
                fixture("engine_key.pem"),
            ),
            (
                "PROVIDERS__ALIPAY__ALIPAY_PUBLIC_KEY",
                fixture("provider_key.pub.pem"),
            ),
        ]
    }

    #[test]
    fn a_provider_is_on_with_its_required_keys_from_the_environment() {
        let settings = load(&alipay()).unwrap();
        let on = settings.providers.alipay.clone().expect("alipay is on");
        assert_eq!(on.app_id, "2021000000000000");
        assert!(on.app_private_key.contains("BEGIN PRIVATE KEY"));
        assert_eq!(on.gateway_url, "https://openapi.alipay.com/gateway.do");
        assert_eq!(
            settings.providers.public_base_url,
            "https://pay.example.com"
        );
        assert_eq!(
            settings.providers.notify_url("/api/payments/alipay/notify"),
            "https://pay.example.com/api/payments/alipay/notify"
        );
        assert!(settings.providers.wechatpay.is_none());
        assert!(settings.providers.stripe.is_none());
        assert!(Settings::defaults().providers.alipay.is_none());
    }

    #[test]
    fn a_half_configured_or_unusable_provider_names_the_key() {
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (alipay()[..3].to_vec(), "providers.alipay.alipay_public_key"),
            ([&alipay()[1..]].concat(), "providers.public_base_url"),
            (
                [&alipay()[..], &[("PRICING__CURRENCY", "USD".into())]].concat(),
                "providers.alipay",
            ),
            (
                [
                    &alipay()[..3],
                    &[("PROVIDERS__ALIPAY__ALIPAY_PUBLIC_KEY", "not a key".into())],
                ]
                .concat(),
                "providers.alipay.alipay_public_key",
            ),
            (
                [
                    &alipay()[..2],
                    &[
                        ("PROVIDERS__ALIPAY__APP_PRIVATE_KEY", "@/no/such.pem".into()),
                        (
                            "PROVIDERS__ALIPAY__ALIPAY_PUBLIC_KEY",
                            fixture("provider_key.pub.pem"),
                        ),
                    ],
                ]
                .concat(),
                "providers.alipay.app_private_key",
            ),
            (
                vec![
                    (
                        "PROVIDERS__PUBLIC_BASE_URL",
                        "https://pay.example.com".into(),
                    ),
                    ("PROVIDERS__STRIPE__SECRET_KEY", "sk_test_x".into()),
                    ("PROVIDERS__STRIPE__WEBHOOK_SECRET", "nope".into()),
                ],
                "providers.stripe.webhook_secret",
            ),
            (
                vec![("PROVIDERS__PAYPAL__KEY", "x".into())],
                "providers.paypal__key",
            ),
        ];
        for (pairs, key) in cases {
            let err = load(&pairs).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }
}
