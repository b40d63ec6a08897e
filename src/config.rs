//! Settings, loaded in layers: built-in defaults, then a TOML file, then environment variables
//! `ORDER_ENGINE__SECTION__KEY`. Every key is listed once, in [`Settings::load_from`], with its
//! default and its validation; `config.toml` at the repository root documents each one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::domain::schedule::Timing;
use crate::domain::states::EventKind;
use crate::domain::time;

mod providers;
pub use providers::{AlipaySettings, ProviderSettings, StripeSettings, WechatpaySettings};

/// Prefix of the environment variables that override single keys.
pub const ENV_PREFIX: &str = "ORDER_ENGINE__";

/// A setting that could not be loaded: start-up stops with `config error: <key>: <reason>`.
#[derive(Debug, thiserror::Error)]
#[error("config error: {key}: {reason}")]
pub struct ConfigError {
    /// `section.key`, or the file that could not be read.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub cluster: ClusterSettings,
    pub orders: OrderSettings,
    pub pricing: PricingSettings,
    pub payment: PaymentSettings,
    pub auth: AuthSettings,
    pub admin: AdminSettings,
    pub effects: EffectSettings,
    pub limits: LimitSettings,
    pub metrics: MetricsSettings,
    pub webhooks: WebhookSettings,
    /// `[providers]` and each provider's section.
    pub providers: ProviderSettings,
    /// `[[schedules]]`, in file order.
    pub schedules: Vec<Schedule>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `host:port` the HTTP API listens on.
    pub bind: String,
    /// HTTP worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Bodies larger than this get 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// Seconds a request has to arrive whole, head and body, from its first byte (idle
    /// keep-alive time does not count); a slower one gets 408 `request_timeout` and its
    /// connection is closed.
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file; its folder is created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, passed to libpq as it is.
    Postgres(String),
    /// A MySQL / MariaDB connection URL (`mysql://user:pass@host:port/db`, build feature
    /// `mysql`), its TLS parameters read.
    #[cfg(feature = "mysql")]
    Mysql(MysqlUrl),
}

/// A `mysql://` URL as the engine connects with it: the URL's `ssl-mode` (or `ssl_mode`) taken
/// out and checked, `ssl-ca`, `ssl-cert` and `ssl-key` spelt as Diesel reads them (`ssl_ca`,
/// ...), every other part as written.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlUrl {
    /// The URL for `MysqlConnection::establish`, without `ssl_mode` (applied by
    /// `db::mysql_tls`, because Diesel cannot pass it to MariaDB's client library).
    pub url: String,
    /// `None`: the client library's default (TLS when `ssl-ca` is given and the server offers
    /// it).
    pub ssl_mode: Option<MysqlSslMode>,
}

/// The URL's `ssl-mode`, as MySQL's own clients spell and mean it.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MysqlSslMode {
    /// No TLS, even when `ssl-ca` is given.
    Disabled,
    /// TLS when the server offers it and `ssl-ca` is given, else plain.
    Preferred,
    /// TLS or no connection; the certificate is checked only against an `ssl-ca` if given.
    Required,
    /// TLS, the server's certificate signed by `ssl-ca`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the URL's host.
    VerifyIdentity,
}

#[cfg(feature = "mysql")]
impl MysqlSslMode {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.to_ascii_uppercase().as_str() {
            "DISABLED" => Ok(Self::Disabled),
            "PREFERRED" => Ok(Self::Preferred),
            "REQUIRED" => Ok(Self::Required),
            "VERIFY_CA" => Ok(Self::VerifyCa),
            "VERIFY_IDENTITY" => Ok(Self::VerifyIdentity),
            _ => Err(format!(
                "ssl-mode={value}: expected DISABLED, PREFERRED, REQUIRED, VERIFY_CA or \
                 VERIFY_IDENTITY"
            )),
        }
    }

    /// The spelling of MySQL's clients (and of Diesel's `ssl_mode` URL parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "DISABLED",
            Self::Preferred => "PREFERRED",
            Self::Required => "REQUIRED",
            Self::VerifyCa => "VERIFY_CA",
            Self::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }

    /// Whether a connection without TLS must fail.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Required | Self::VerifyCa | Self::VerifyIdentity)
    }
}

#[cfg(feature = "mysql")]
impl MysqlUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl_mode = None;
        let mut pairs: Vec<(String, &str)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // MySQL's clients write `ssl-ca`, Diesel reads `ssl_ca`: both are accepted.
            let key = match key.replace('-', "_").as_str() {
                tls @ ("ssl_mode" | "ssl_ca" | "ssl_cert" | "ssl_key") => tls.to_string(),
                _ => key.to_string(),
            };
            if key.starts_with("ssl_") && pairs.iter().any(|(k, _)| *k == key) {
                return Err(format!("{} is given twice", key.replace('_', "-")));
            }
            if key == "ssl_mode" {
                if ssl_mode.is_some() {
                    return Err("ssl-mode is given twice".into());
                }
                ssl_mode = Some(MysqlSslMode::parse(value)?);
            } else {
                pairs.push((key, value));
            }
        }
        let has_ca = pairs.iter().any(|(k, _)| k == "ssl_ca");
        match ssl_mode {
            Some(MysqlSslMode::Disabled) => {
                pairs.retain(|(k, _)| !matches!(k.as_str(), "ssl_ca" | "ssl_cert" | "ssl_key"))
            }
            Some(mode @ (MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity)) if !has_ca => {
                return Err(format!(
                    "ssl-mode={} needs ssl-ca, the file of the CA that signed the server's \
                     certificate",
                    mode.as_str()
                ))
            }
            _ => {}
        }
        let mut url = base.to_string();
        for (i, (key, value)) in pairs.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(key);
            url.push('=');
            url.push_str(value);
        }
        Ok(Self { url, ssl_mode })
    }
}

impl DatabaseUrl {
    /// A `mysql://` URL: the MySQL backend, or an error naming the feature it needs.
    #[cfg(feature = "mysql")]
    fn mysql(url: &str) -> Result<Self, String> {
        MysqlUrl::parse(url).map(Self::Mysql)
    }

    #[cfg(not(feature = "mysql"))]
    fn mysql(_url: &str) -> Result<Self, String> {
        Err("mysql:// needs an engine built with `cargo build --features mysql`".into())
    }

    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite://data/order-engine.db".into(),
                );
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_string()))
        } else if url.starts_with("mysql://") {
            Self::mysql(url)
        } else {
            Err("must start with sqlite://, postgres:// or mysql://".into())
        }
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    /// Connections kept in the pool.
    pub pool_size: u32,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `None` turns every Redis feature off.
    pub url: Option<String>,
    pub events_stream: String,
    pub events_maxlen: u64,
    /// Prefix of every other key this engine keeps in Redis (heartbeats, rate limits,
    /// idempotency records, stop channels), so several clusters can share one Redis.
    pub key_prefix: String,
}

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This process's id; random when the file leaves it empty.
    pub node_id: String,
    pub heartbeat_ttl_secs: u64,
}

#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// Seconds between placement and `expires_at`.
    pub payment_timeout_secs: u64,
}

#[derive(Debug, Clone)]
pub struct PricingSettings {
    /// Cents one loyalty point is worth (>= 1).
    pub cents_per_point: i64,
    /// ISO 4217 code of every amount, upper case; one with two decimal places (a "cent").
    pub currency: String,
}

/// ISO 4217 currencies whose minor unit is not a hundredth: money in "cents" cannot be them.
const NOT_TWO_DECIMALS: [&str; 25] = [
    "BHD", "BIF", "CLF", "CLP", "DJF", "GNF", "IQD", "ISK", "JOD", "JPY", "KMF", "KRW", "KWD",
    "LYD", "OMR", "PYG", "RWF", "TND", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF",
];

/// `pricing.currency`: three letters (any case), with two decimal places.
fn currency(text: String) -> Result<String, ConfigError> {
    let code = text.trim().to_ascii_uppercase();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ConfigError::new(
            "pricing.currency",
            format!("expected a three-letter ISO 4217 code, found {text:?}"),
        ));
    }
    if NOT_TWO_DECIMALS.contains(&code.as_str()) {
        return Err(ConfigError::new(
            "pricing.currency",
            format!("{code} does not have two decimal places, and amounts are in cents"),
        ));
    }
    Ok(code)
}

#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// HMAC-SHA256 key of callback signatures.
    pub secret: String,
    /// Largest accepted `|now - t|` of a signature, in seconds.
    pub tolerance_secs: u64,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// HS256 key of client JWTs.
    pub jwt_secret: String,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Bearer token of the admin API, and what signs in to the dashboard (`/admin/ui`).
    pub token: String,
    /// Seconds a dashboard session lives from sign-in (its cookie's `Max-Age` and the stored
    /// session's expiry); after it the browser is sent to sign in again.
    pub session_ttl_secs: u64,
}

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Bearer token `GET /metrics` requires; `None` (empty): no auth.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EffectSettings {
    /// Attempts before an effect is dead-lettered.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Attempts at one delivery before it is dead-lettered for an admin to retry.
    pub max_attempts: u32,
    /// Delay before the first retry of a delivery; it doubles with each attempt (with jitter).
    pub backoff_base_ms: u64,
    /// Longest delay between two attempts at a delivery.
    pub backoff_max_ms: u64,
    /// How long an endpoint has to answer an attempt (the SPEC's 10 s; lowered only by tests).
    pub timeout_ms: u64,
    /// The endpoints every order event is POSTed to; none: no webhooks.
    pub endpoints: Vec<WebhookEndpoint>,
}

/// One `[[webhooks.endpoints]]` entry, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// `http://` or `https://` URL; also the endpoint's identity in the deliveries table.
    pub url: String,
    /// The event kinds it receives; `None`: all of them.
    pub events: Option<Vec<EventKind>>,
    /// The HMAC key: the base64-decoded part of the `whsec_` secret.
    pub key: Vec<u8>,
}

impl WebhookEndpoint {
    /// Whether events of `kind` go to this endpoint.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&kind))
    }
}

impl std::fmt::Debug for WebhookEndpoint {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// One `[[schedules]]` entry, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique; the schedule's identity in the database and in its runs' `webhook-id`.
    pub name: String,
    pub timing: Timing,
    pub job: Job,
}

/// What a schedule runs.
#[derive(Clone)]
pub enum Job {
    /// Deletes rows nothing needs any more, older than `retention_days`.
    Purge { retention_days: u64 },
    /// POSTs `{"schedule","fire_at"}` to `url`, signed per Standard Webhooks with the key.
    Webhook { url: String, key: Vec<u8> },
    /// Asks the payment providers about open trades (older than `min_age_secs`) and those of
    /// orders closed within `lookback_secs`, and applies what they report.
    ReconcilePayments {
        min_age_secs: u64,
        lookback_secs: u64,
    },
}

impl Job {
    pub fn name(&self) -> &'static str {
        match self {
            Job::Purge { .. } => "purge",
            Job::Webhook { .. } => "webhook",
            Job::ReconcilePayments { .. } => "reconcile_payments",
        }
    }
}

impl std::fmt::Debug for Job {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Purge { retention_days } => write!(f, "purge (retention_days {retention_days})"),
            Job::Webhook { url, .. } => write!(f, "webhook to {url}"),
            Job::ReconcilePayments {
                min_age_secs,
                lookback_secs,
            } => write!(
                f,
                "reconcile_payments (min_age_secs {min_age_secs}, lookback_secs {lookback_secs})"
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub orders_per_user_per_minute: u32,
}

/// The values of one layered load: the file's table and the environment's overrides. Each key
/// read is removed, so what is left afterwards is unknown.
struct Layers {
    file: BTreeMap<String, toml::Table>,
    env: BTreeMap<(String, String), String>,
}

enum Raw {
    File(toml::Value),
    Env(String),
}

impl Layers {
    fn take(&mut self, section: &str, key: &str) -> Option<Raw> {
        if let Some(value) = self.env.remove(&(section.to_string(), key.to_string())) {
            if let Some(table) = self.file.get_mut(section) {
                table.remove(key);
            }
            return Some(Raw::Env(value));
        }
        self.file
            .get_mut(section)
            .and_then(|table| table.remove(key))
            .map(Raw::File)
    }

    fn string(&mut self, section: &str, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.take(section, key) {
            None => Ok(default.to_string()),
            Some(Raw::Env(value)) => Ok(value),
            Some(Raw::File(toml::Value::String(value))) => Ok(value),
            Some(Raw::File(other)) => Err(ConfigError::new(
                format!("{section}.{key}"),
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn integer(
        &mut self,
        section: &str,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let name = format!("{section}.{key}");
        let value = match self.take(section, key) {
            None => default,
            Some(Raw::Env(text)) => text.trim().parse::<u64>().map_err(|_| {
                ConfigError::new(&name, format!("expected a whole number, found {text:?}"))
            })?,
            Some(Raw::File(toml::Value::Integer(n))) => u64::try_from(n).map_err(|_| {
                ConfigError::new(&name, format!("must be at least {min}, found {n}"))
            })?,
            Some(Raw::File(other)) => {
                return Err(ConfigError::new(
                    &name,
                    format!("expected a whole number, found {}", other.type_str()),
                ))
            }
        };
        if value < min || value > max {
            return Err(ConfigError::new(
                &name,
                format!("must be between {min} and {max}, found {value}"),
            ));
        }
        Ok(value)
    }

    /// The first key nobody asked for, if any.
    fn first_unknown(&self) -> Option<ConfigError> {
        if let Some((section, key)) = self.env.keys().next() {
            return Some(ConfigError::new(
                format!("{section}.{key}"),
                format!(
                    "unknown key (from environment variable {ENV_PREFIX}{}__{})",
                    section.to_uppercase().replace('.', "__"),
                    key.to_uppercase()
                ),
            ));
        }
        self.file.iter().find_map(|(section, table)| {
            table
                .keys()
                .next()
                .map(|key| ConfigError::new(format!("{section}.{key}"), "unknown key"))
        })
    }
}

const SECTIONS: [&str; 13] = [
    "server", "database", "redis", "cluster", "orders", "pricing", "payment", "auth", "admin",
    "effects", "limits", "metrics", "webhooks",
];

impl Settings {
    /// Loads `path` (or `config.toml` in the working directory, when present) and the
    /// process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
            })?),
            None => std::fs::read_to_string("config.toml").ok(),
        };
        let name = path.map_or_else(|| "config.toml".to_string(), |p| p.display().to_string());
        Self::load_from(
            text.as_deref().map(|t| (name.as_str(), t)),
            std::env::vars(),
        )
    }

    /// Built-in defaults only: what a missing `config.toml` gives.
    pub fn defaults() -> Self {
        Self::load_from(None, std::iter::empty()).expect("the built-in defaults are valid")
    }

    /// Loads from a file's text (with its name for messages) and environment variables.
    pub fn load_from(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut layers = Layers {
            file: BTreeMap::new(),
            env: BTreeMap::new(),
        };
        let mut schedule_entries = None;
        if let Some((name, text)) = file {
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::new(name, e.message().to_string()))?;
            for (section, value) in table {
                match value {
                    toml::Value::Array(_) if section == "schedules" => {
                        schedule_entries = Some(value);
                    }
                    toml::Value::Table(mut inner) if section == "providers" => {
                        // `[providers.alipay]` etc. are sections of their own.
                        for name in &providers::SECTIONS[1..] {
                            let sub = &name["providers.".len()..];
                            if let Some(value) = inner.remove(sub) {
                                let toml::Value::Table(table) = value else {
                                    return Err(ConfigError::new(
                                        *name,
                                        "expected a [section] table",
                                    ));
                                };
                                layers.file.insert(name.to_string(), table);
                            }
                        }
                        layers.file.insert(section, inner);
                    }
                    toml::Value::Table(inner) if SECTIONS.contains(&section.as_str()) => {
                        layers.file.insert(section, inner);
                    }
                    toml::Value::Table(inner) => {
                        let key = match inner.keys().next() {
                            Some(first) => format!("{section}.{first}"),
                            None => section,
                        };
                        return Err(ConfigError::new(key, "unknown section"));
                    }
                    _ => return Err(ConfigError::new(section, "expected a [section] table")),
                }
            }
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            match rest.split_once("__") {
                Some((section, key)) if !section.is_empty() && !key.is_empty() => {
                    let (mut section, mut key) = (section.to_lowercase(), key.to_lowercase());
                    // ORDER_ENGINE__PROVIDERS__ALIPAY__APP_ID is `providers.alipay`'s `app_id`.
                    if section == "providers" {
                        if let Some((sub, rest)) = key.split_once("__") {
                            let nested = format!("providers.{sub}");
                            if providers::SECTIONS.contains(&nested.as_str()) && !rest.is_empty() {
                                key = rest.to_string();
                                section = nested;
                            }
                        }
                    }
                    layers.env.insert((section, key), value);
                }
                _ => {
                    return Err(ConfigError::new(
                        name,
                        "expected ORDER_ENGINE__SECTION__KEY",
                    ))
                }
            }
        }

        let l = &mut layers;
        let currency = currency(l.string("pricing", "currency", "CNY")?)?;
        let url_text = l.string("database", "url", "sqlite://data/order-engine.db")?;
        let settings = Settings {
            server: ServerSettings {
                bind: non_empty("server.bind", l.string("server", "bind", "127.0.0.1:8080")?)?,
                workers: l.integer("server", "workers", 0, 0, 1024)? as usize,
                max_body_bytes: l.integer("server", "max_body_bytes", 65536, 1, 1 << 30)? as usize,
                request_timeout_secs: l.integer("server", "request_timeout_secs", 30, 1, 3600)?,
            },
            database: DatabaseSettings {
                url: DatabaseUrl::parse(&url_text)
                    .map_err(|reason| ConfigError::new("database.url", reason))?,
                pool_size: l.integer("database", "pool_size", 8, 1, 1000)? as u32,
            },
            redis: RedisSettings {
                url: {
                    let url = l.string("redis", "url", "")?;
                    if url.is_empty() {
                        None
                    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
                        Some(url)
                    } else {
                        return Err(ConfigError::new(
                            "redis.url",
                            "must be empty or start with redis://",
                        ));
                    }
                },
                events_stream: non_empty(
                    "redis.events_stream",
                    l.string("redis", "events_stream", "order-events")?,
                )?,
                events_maxlen: l.integer("redis", "events_maxlen", 1_000_000, 1, u64::MAX)?,
                key_prefix: non_empty(
                    "redis.key_prefix",
                    l.string("redis", "key_prefix", "order-engine")?,
                )?,
            },
            cluster: ClusterSettings {
                node_id: {
                    let id = l.string("cluster", "node_id", "")?;
                    if id.is_empty() {
                        uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
                    } else if id.len() > 64 {
                        return Err(ConfigError::new(
                            "cluster.node_id",
                            "must be at most 64 characters",
                        ));
                    } else {
                        id
                    }
                },
                heartbeat_ttl_secs: l.integer("cluster", "heartbeat_ttl_secs", 5, 1, 3600)?,
            },
            orders: OrderSettings {
                payment_timeout_secs: l.integer(
                    "orders",
                    "payment_timeout_secs",
                    1800,
                    1,
                    366 * 24 * 3600,
                )?,
            },
            pricing: PricingSettings {
                cents_per_point: l.integer("pricing", "cents_per_point", 1, 1, i64::MAX as u64)?
                    as i64,
                currency: currency.clone(),
            },
            payment: PaymentSettings {
                secret: non_empty(
                    "payment.secret",
                    l.string("payment", "secret", "dev-payment-secret-change-me")?,
                )?,
                tolerance_secs: l.integer("payment", "tolerance_secs", 300, 0, 86_400)?,
            },
            auth: AuthSettings {
                jwt_secret: non_empty(
                    "auth.jwt_secret",
                    l.string("auth", "jwt_secret", "dev-jwt-secret-change-me")?,
                )?,
            },
            admin: AdminSettings {
                token: non_empty(
                    "admin.token",
                    l.string("admin", "token", "dev-admin-token-change-me")?,
                )?,
                session_ttl_secs: l.integer("admin", "session_ttl_secs", 28_800, 1, 31 * 86_400)?,
            },
            effects: EffectSettings {
                max_attempts: l.integer("effects", "max_attempts", 8, 1, 1000)? as u32,
                backoff_base_ms: l.integer("effects", "backoff_base_ms", 200, 1, 3_600_000)?,
                backoff_max_ms: l.integer("effects", "backoff_max_ms", 60_000, 1, 86_400_000)?,
            },
            limits: LimitSettings {
                orders_per_user_per_minute: l.integer(
                    "limits",
                    "orders_per_user_per_minute",
                    60,
                    1,
                    1_000_000,
                )? as u32,
            },
            metrics: MetricsSettings {
                token: Some(l.string("metrics", "token", "")?).filter(|t| !t.trim().is_empty()),
            },
            webhooks: WebhookSettings {
                max_attempts: l.integer("webhooks", "max_attempts", 8, 1, 1000)? as u32,
                backoff_base_ms: l.integer("webhooks", "backoff_base_ms", 1_000, 1, 3_600_000)?,
                backoff_max_ms: l.integer("webhooks", "backoff_max_ms", 600_000, 1, 86_400_000)?,
                timeout_ms: l.integer("webhooks", "timeout_ms", 10_000, 1, 10_000)?,
                endpoints: webhook_endpoints(l.take("webhooks", "endpoints"))?,
            },
            providers: providers::load(l, &currency)?,
            schedules: schedules(schedule_entries)?,
        };
        if let Some(err) = layers.first_unknown() {
            return Err(err);
        }
        for section in ["effects", "webhooks"] {
            let (base, max) = match section {
                "effects" => (
                    settings.effects.backoff_base_ms,
                    settings.effects.backoff_max_ms,
                ),
                _ => (
                    settings.webhooks.backoff_base_ms,
                    settings.webhooks.backoff_max_ms,
                ),
            };
            if max < base {
                return Err(ConfigError::new(
                    format!("{section}.backoff_max_ms"),
                    format!("must not be below {section}.backoff_base_ms"),
                ));
            }
        }
        Ok(settings)
    }
}

/// `[[webhooks.endpoints]]`: an array of tables in the file, or the same array as inline TOML
/// in `ORDER_ENGINE__WEBHOOKS__ENDPOINTS` (`[{url = "...", secret = "whsec_..."}]`).
fn webhook_endpoints(raw: Option<Raw>) -> Result<Vec<WebhookEndpoint>, ConfigError> {
    const KEY: &str = "webhooks.endpoints";
    let value = match raw {
        None => return Ok(Vec::new()),
        Some(Raw::File(value)) => value,
        Some(Raw::Env(text)) => {
            let mut table: toml::Table =
                format!("endpoints = {text}")
                    .parse()
                    .map_err(|e: toml::de::Error| {
                        ConfigError::new(
                            KEY,
                            format!(
                                "expected a TOML array of tables: {}",
                                e.message().trim().replace('\n', " ")
                            ),
                        )
                    })?;
            table
                .remove("endpoints")
                .unwrap_or(toml::Value::Array(Vec::new()))
        }
    };
    let mut endpoints: Vec<WebhookEndpoint> = Vec::new();
    for mut entry in Entry::all(KEY, value)? {
        let url = entry.required_text("url")?;
        check_webhook_url(&url).map_err(|reason| entry.error("url", reason))?;
        if endpoints.iter().any(|e| e.url == url) {
            return Err(entry.error("url", "the same url as an endpoint before it"));
        }
        let secret = entry.required_text("secret")?;
        let key = decode_webhook_secret(&secret).map_err(|reason| entry.error("secret", reason))?;
        let events = match entry.table.remove("events") {
            None => None,
            Some(toml::Value::Array(kinds)) => {
                let mut parsed = Vec::with_capacity(kinds.len());
                for kind in kinds {
                    let kind = kind.as_str().and_then(EventKind::parse).ok_or_else(|| {
                        entry.error(
                            "events",
                            format!(
                                "unknown event kind {kind:?}; known: {}",
                                EventKind::ALL
                                    .iter()
                                    .map(|k| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?;
                    if !parsed.contains(&kind) {
                        parsed.push(kind);
                    }
                }
                Some(parsed)
            }
            Some(other) => {
                return Err(entry.error(
                    "events",
                    format!(
                        "expected an array of event kinds, found {}",
                        other.type_str()
                    ),
                ))
            }
        };
        entry.finish()?;
        endpoints.push(WebhookEndpoint { url, events, key });
    }
    Ok(endpoints)
}

/// One table of an array of tables (`[[webhooks.endpoints]]`, `[[schedules]]`): its fields,
/// taken one by one and named `list[index].field` in errors; what is left is unknown.
struct Entry {
    list: &'static str,
    index: usize,
    table: toml::Table,
}

impl Entry {
    /// The tables of `value`, which must be an array of tables.
    fn all(list: &'static str, value: toml::Value) -> Result<Vec<Entry>, ConfigError> {
        let toml::Value::Array(entries) = value else {
            return Err(ConfigError::new(
                list,
                format!("expected [[{list}]] tables, found {}", value.type_str()),
            ));
        };
        entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| match entry {
                toml::Value::Table(table) => Ok(Entry { list, index, table }),
                _ => Err(ConfigError::new(
                    list,
                    format!("entry {index}: expected a table"),
                )),
            })
            .collect()
    }

    fn error(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(format!("{}[{}].{field}", self.list, self.index), reason)
    }

    fn text(&mut self, field: &str) -> Result<Option<String>, ConfigError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(
                field,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn required_text(&mut self, field: &str) -> Result<String, ConfigError> {
        self.text(field)?
            .ok_or_else(|| self.error(field, "missing"))
    }

    fn integer(&mut self, field: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => match u64::try_from(n) {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.error(field, format!("must be between {min} and {max}, found {n}"))),
            },
            Some(other) => Err(self.error(
                field,
                format!("expected a whole number, found {}", other.type_str()),
            )),
        }
    }

    /// Fails on the first field nobody took.
    fn finish(self) -> Result<(), ConfigError> {
        match self.table.keys().next() {
            Some(field) => Err(self.error(field, "unknown key")),
            None => Ok(()),
        }
    }
}

/// `[[schedules]]` (file only): each `name`, `job`, exactly one of `cron` (with `timezone`),
/// `every_secs` or `at`, and its job's own keys.
fn schedules(value: Option<toml::Value>) -> Result<Vec<Schedule>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut schedules: Vec<Schedule> = Vec::new();
    for mut entry in Entry::all("schedules", value)? {
        let name = entry.required_text("name")?;
        if !crate::domain::schedule::valid_name(&name) {
            return Err(entry.error("name", "must be 1-64 letters, digits, `_`, `-` or `.`"));
        }
        if schedules.iter().any(|s| s.name == name) {
            return Err(entry.error("name", "the same name as a schedule before it"));
        }
        let cron = entry.text("cron")?;
        let zone = entry.text("timezone")?;
        let every = entry.integer("every_secs", 1, 366 * 86_400)?;
        let at = entry.text("at")?;
        let timing = match (cron, every, at) {
            (Some(pattern), None, None) => Timing::cron(&pattern, zone.as_deref().unwrap_or("UTC"))
                .map_err(|reason| {
                    let field = if reason.contains("time zone") {
                        "timezone"
                    } else {
                        "cron"
                    };
                    entry.error(field, reason)
                })?,
            (None, Some(secs), None) => Timing::Every { secs },
            (None, None, Some(at)) => {
                Timing::At(time::parse(&at).map_err(|reason| entry.error("at", reason))?)
            }
            (None, None, None) => {
                return Err(entry.error("cron", "one of cron, every_secs or at is required"))
            }
            _ => {
                return Err(
                    entry.error("cron", "exactly one of cron, every_secs or at, not several")
                )
            }
        };
        if zone.is_some() && !matches!(timing, Timing::Cron { .. }) {
            return Err(entry.error("timezone", "only a cron schedule has a time zone"));
        }
        let job = match entry.required_text("job")?.as_str() {
            "purge" => Job::Purge {
                retention_days: entry.integer("retention_days", 1, 36_500)?.unwrap_or(30),
            },
            "webhook" => {
                let url = entry.required_text("url")?;
                check_webhook_url(&url).map_err(|reason| entry.error("url", reason))?;
                let secret = entry.required_text("secret")?;
                let key = decode_webhook_secret(&secret)
                    .map_err(|reason| entry.error("secret", reason))?;
                Job::Webhook { url, key }
            }
            "reconcile_payments" => Job::ReconcilePayments {
                min_age_secs: entry
                    .integer("min_age_secs", 0, 366 * 86_400)?
                    .unwrap_or(300),
                lookback_secs: entry
                    .integer("lookback_secs", 0, 366 * 86_400)?
                    .unwrap_or(86_400),
            },
            other => {
                return Err(entry.error(
                    "job",
                    format!("unknown job {other:?}; known: purge, reconcile_payments, webhook"),
                ))
            }
        };
        entry.finish()?;
        schedules.push(Schedule { name, timing, job });
    }
    Ok(schedules)
}

/// An endpoint URL: `http://` or `https://`, a host, no whitespace.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.ends_with(':') {
        return Err("must name a host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    Ok(())
}

/// The key of a Standard Webhooks secret: `whsec_` + base64 of 24 to 64 random bytes.
pub fn decode_webhook_secret(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must be whsec_ followed by base64")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "the part after whsec_ is not valid base64".to_string())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "must decode to 24 to 64 bytes (the Standard Webhooks range), found {}",
            key.len()
        ));
    }
    Ok(key)
}

fn non_empty(key: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::new(key, "must not be empty"))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_repository_config_file_holds_the_defaults() {
        let text = include_str!("../config.toml");
        let from_file = Settings::load_from(Some(("config.toml", text)), env(&[])).unwrap();
        let defaults = Settings::defaults();
        assert_eq!(from_file.server.bind, defaults.server.bind);
        assert_eq!(from_file.database.url, defaults.database.url);
        assert_eq!(from_file.orders.payment_timeout_secs, 1800);
        assert_eq!(from_file.server.max_body_bytes, 65536);
        assert_eq!(from_file.server.request_timeout_secs, 30);
        assert_eq!(defaults.server.request_timeout_secs, 30);
        assert_eq!(from_file.limits.orders_per_user_per_minute, 60);
        assert_eq!(from_file.admin.session_ttl_secs, 28_800);
        assert_eq!(defaults.admin.session_ttl_secs, 28_800);
        assert_eq!(from_file.pricing.currency, "CNY");
        assert_eq!(defaults.pricing.currency, "CNY");
    }

    #[test]
    fn the_currency_has_two_decimal_places() {
        let load = |code: &str| {
            Settings::load_from(None, env(&[("ORDER_ENGINE__PRICING__CURRENCY", code)]))
                .map(|s| s.pricing.currency)
        };
        assert_eq!(load("usd").unwrap(), "USD");
        assert_eq!(load("EUR").unwrap(), "EUR");
        for bad in ["JPY", "krw", "KWD", "US", "EURO", "12A", ""] {
            let err = load(bad).unwrap_err();
            assert_eq!(err.key, "pricing.currency", "{bad}: {err}");
        }
    }

    #[test]
    fn environment_overrides_one_key() {
        let s = Settings::load_from(
            Some(("c.toml", "[orders]\npayment_timeout_secs = 60\n")),
            env(&[("ORDER_ENGINE__ORDERS__PAYMENT_TIMEOUT_SECS", "5")]),
        )
        .unwrap();
        assert_eq!(s.orders.payment_timeout_secs, 5);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[orders]\npayment_timeout_secs = \"x\"\n",
                "orders.payment_timeout_secs",
            ),
            (
                "[pricing]\ncents_per_point = 0\n",
                "pricing.cents_per_point",
            ),
            ("[server]\nbogus = 1\n", "server.bogus"),
            (
                "[server]\nrequest_timeout_secs = 0\n",
                "server.request_timeout_secs",
            ),
            (
                "[server]\nrequest_timeout_secs = \"30s\"\n",
                "server.request_timeout_secs",
            ),
            // Without the `mysql` feature any mysql:// URL; with it, an unknown ssl-mode.
            (
                "[database]\nurl = \"mysql://x/db?ssl-mode=sometimes\"\n",
                "database.url",
            ),
        ];
        for (text, key) in cases {
            let err = Settings::load_from(Some(("c.toml", text)), env(&[])).unwrap_err();
            assert_eq!(err.key, key, "{text}");
            assert!(err
                .to_string()
                .starts_with(&format!("config error: {key}: ")));
        }
        let err = Settings::load_from(None, env(&[("ORDER_ENGINE__AUTH__NOPE", "1")])).unwrap_err();
        assert_eq!(err.key, "auth.nope");
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_tls_parameters_in_either_spelling() {
        let url = MysqlUrl::parse(
            "mysql://u:p%40@h:3306/db?ssl-mode=verify_identity&ssl-ca=/x%20y.crt&charset=utf8mb4",
        )
        .unwrap();
        assert_eq!(url.ssl_mode, Some(MysqlSslMode::VerifyIdentity));
        assert_eq!(
            url.url,
            "mysql://u:p%40@h:3306/db?ssl_ca=/x%20y.crt&charset=utf8mb4"
        );
        let url = MysqlUrl::parse("mysql://h/db?ssl_mode=REQUIRED").unwrap();
        assert_eq!(
            (url.ssl_mode, url.url.as_str()),
            (Some(MysqlSslMode::Required), "mysql://h/db")
        );
        let url = MysqlUrl::parse("mysql://h/db?ssl-mode=DISABLED&ssl-ca=/ca.crt").unwrap();
        assert_eq!(url.url, "mysql://h/db", "DISABLED drops the CA");
        assert_eq!(MysqlUrl::parse("mysql://h/db").unwrap().ssl_mode, None);
        for bad in [
            "mysql://h/db?ssl-mode=sometimes",
            "mysql://h/db?ssl-mode=VERIFY_CA",
            "mysql://h/db?ssl-mode=REQUIRED&ssl_mode=REQUIRED",
            "mysql://h/db?ssl-ca=/a&ssl_ca=/b",
        ] {
            assert!(MysqlUrl::parse(bad).is_err(), "{bad}");
        }
        let err = Settings::load_from(
            None,
            env(&[("ORDER_ENGINE__DATABASE__URL", "mysql://h/db?ssl-mode=x")]),
        )
        .unwrap_err();
        assert_eq!(err.key, "database.url");
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn webhook_endpoints_from_the_file_and_the_environment() {
        let defaults = Settings::defaults().webhooks;
        assert_eq!((defaults.max_attempts, defaults.timeout_ms), (8, 10_000));
        assert!(defaults.endpoints.is_empty());
        let text = format!(
            "[webhooks]\nmax_attempts = 3\n\n[[webhooks.endpoints]]\nurl = \"https://a.example/h\"\n\
             secret = \"{SECRET}\"\n\n[[webhooks.endpoints]]\nurl = \"http://127.0.0.1:9/x\"\n\
             events = [\"paid\", \"granted\"]\nsecret = \"{SECRET}\"\n"
        );
        let s = Settings::load_from(Some(("c.toml", &text)), env(&[])).unwrap();
        assert_eq!(s.webhooks.max_attempts, 3);
        let [all, some] = &s.webhooks.endpoints[..] else {
            panic!("{:?}", s.webhooks.endpoints)
        };
        assert!(all.events.is_none() && all.wants(EventKind::Placed));
        assert_eq!(all.key.len(), 24);
        assert!(some.wants(EventKind::Paid) && !some.wants(EventKind::Placed));
        assert!(
            !format!("{some:?}").contains("MfKQ"),
            "the key is never printed"
        );

        let inline =
            format!(r#"[{{url = "http://h:1/", secret = "{SECRET}", events = ["refunded"]}}]"#);
        let s = Settings::load_from(None, env(&[("ORDER_ENGINE__WEBHOOKS__ENDPOINTS", &inline)]))
            .unwrap();
        assert_eq!(s.webhooks.endpoints.len(), 1);
        assert_eq!(s.webhooks.endpoints[0].url, "http://h:1/");
    }

    #[test]
    fn bad_webhook_settings_name_the_key() {
        let endpoint = |fields: &str| format!("[[webhooks.endpoints]]\n{fields}\n");
        let good_url = "url = \"https://a.example/h\"";
        let good_secret = format!("secret = \"{SECRET}\"");
        let cases = [
            (endpoint(&good_secret), "webhooks.endpoints[0].url"),
            (endpoint(good_url), "webhooks.endpoints[0].secret"),
            (
                endpoint(&format!("url = \"ftp://a/\"\n{good_secret}")),
                "webhooks.endpoints[0].url",
            ),
            (
                endpoint(&format!("url = \"https://\"\n{good_secret}")),
                "webhooks.endpoints[0].url",
            ),
            (
                endpoint(&format!(
                    "{good_url}\nsecret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""
                )),
                "webhooks.endpoints[0].secret",
            ),
            (
                endpoint(&format!("{good_url}\nsecret = \"whsec_not base64!\"")),
                "webhooks.endpoints[0].secret",
            ),
            (
                endpoint(&format!("{good_url}\nsecret = \"whsec_c2hvcnQ=\"")),
                "webhooks.endpoints[0].secret",
            ),
            (
                endpoint(&format!(
                    "{good_url}\n{good_secret}\nevents = [\"shipped\"]"
                )),
                "webhooks.endpoints[0].events",
            ),
            (
                endpoint(&format!("{good_url}\n{good_secret}\nevents = \"paid\"")),
                "webhooks.endpoints[0].events",
            ),
            (
                endpoint(&format!("{good_url}\n{good_secret}\nretries = 3")),
                "webhooks.endpoints[0].retries",
            ),
            (
                format!(
                    "{}{}",
                    endpoint(&format!("{good_url}\n{good_secret}")),
                    endpoint(&format!("{good_url}\n{good_secret}"))
                ),
                "webhooks.endpoints[1].url",
            ),
            (
                "[webhooks]\nendpoints = 3\n".to_string(),
                "webhooks.endpoints",
            ),
            (
                "[webhooks]\ntimeout_ms = 20000\n".to_string(),
                "webhooks.timeout_ms",
            ),
            (
                "[webhooks]\nmax_attempts = 0\n".to_string(),
                "webhooks.max_attempts",
            ),
            (
                "[webhooks]\nbackoff_base_ms = 10\nbackoff_max_ms = 5\n".to_string(),
                "webhooks.backoff_max_ms",
            ),
            ("[webhooks]\nbogus = 1\n".to_string(), "webhooks.bogus"),
        ];
        for (text, key) in cases {
            let err = Settings::load_from(Some(("c.toml", &text)), env(&[])).unwrap_err();
            assert_eq!(err.key, key, "{text}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
        let err = Settings::load_from(
            None,
            env(&[("ORDER_ENGINE__WEBHOOKS__ENDPOINTS", "[{url = ")]),
        )
        .unwrap_err();
        assert_eq!(err.key, "webhooks.endpoints");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }

    #[test]
    fn schedules_from_the_file() {
        let text = format!(
            "[[schedules]]\nname = \"nightly\"\njob = \"purge\"\ncron = \"30 3 * * *\"\n\
             timezone = \"Asia/Shanghai\"\nretention_days = 7\n\n\
             [[schedules]]\nname = \"hourly.report\"\njob = \"webhook\"\nevery_secs = 3600\n\
             url = \"https://r.example/h\"\nsecret = \"{SECRET}\"\n\n\
             [[schedules]]\nname = \"once\"\njob = \"purge\"\nat = \"2027-01-01T00:00:00+08:00\"\n"
        );
        let s = Settings::load_from(Some(("c.toml", &text)), env(&[])).unwrap();
        let described: Vec<String> = s
            .schedules
            .iter()
            .map(|s| format!("{} {:?} {}", s.name, s.job, s.timing))
            .collect();
        assert_eq!(
            described,
            [
                "nightly purge (retention_days 7) cron 30 3 * * * Asia/Shanghai",
                "hourly.report webhook to https://r.example/h every 3600s",
                "once purge (retention_days 30) at 2026-12-31T16:00:00.000Z",
            ]
        );
        assert!(Settings::defaults().schedules.is_empty());
    }

    #[test]
    fn bad_schedules_name_the_key() {
        let purge =
            |fields: &str| format!("[[schedules]]\nname = \"p\"\njob = \"purge\"\n{fields}\n");
        let cases = [
            (purge("every_secs = 0"), "schedules[0].every_secs"),
            (purge("every_secs = \"60\""), "schedules[0].every_secs"),
            (purge(""), "schedules[0].cron"),
            (
                purge("every_secs = 60\ncron = \"* * * * *\""),
                "schedules[0].cron",
            ),
            (purge("cron = \"* * * *\""), "schedules[0].cron"),
            (purge("cron = \"0 0 30 2 *\""), "schedules[0].cron"),
            (
                purge("cron = \"0 0 * * *\"\ntimezone = \"Mars/Olympus\""),
                "schedules[0].timezone",
            ),
            (
                purge("every_secs = 60\ntimezone = \"UTC\""),
                "schedules[0].timezone",
            ),
            (purge("at = \"2027-01-01T00:00:00\""), "schedules[0].at"),
            (
                purge("every_secs = 60\nretention_days = 0"),
                "schedules[0].retention_days",
            ),
            (
                purge("every_secs = 60\nurl = \"http://x/\""),
                "schedules[0].url",
            ),
            (
                "[[schedules]]\nname = \"a b\"\njob = \"purge\"\nevery_secs = 1\n".to_string(),
                "schedules[0].name",
            ),
            (
                "[[schedules]]\njob = \"purge\"\nevery_secs = 1\n".to_string(),
                "schedules[0].name",
            ),
            (
                format!("{}{}", purge("every_secs = 1"), purge("every_secs = 2")),
                "schedules[1].name",
            ),
            (
                "[[schedules]]\nname = \"w\"\njob = \"webhook\"\nevery_secs = 1\n\
                 url = \"ftp://x/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
                    .to_string(),
                "schedules[0].url",
            ),
            (
                "[[schedules]]\nname = \"w\"\njob = \"webhook\"\nevery_secs = 1\n\
                 url = \"http://x/\"\n"
                    .to_string(),
                "schedules[0].secret",
            ),
            (
                "[[schedules]]\nname = \"r\"\njob = \"reconcile_payments\"\nevery_secs = 60\n\
                 min_age_secs = -1\n"
                    .to_string(),
                "schedules[0].min_age_secs",
            ),
            (
                "[[schedules]]\nname = \"x\"\njob = \"send_sms\"\nevery_secs = 60\n".to_string(),
                "schedules[0].job",
            ),
            ("schedules = 3\n".to_string(), "schedules"),
            ("[schedules]\nname = \"x\"\n".to_string(), "schedules.name"),
        ];
        for (text, key) in cases {
            let err = Settings::load_from(Some(("c.toml", &text)), env(&[])).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }
}
