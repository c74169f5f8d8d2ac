//! Typed settings, layered: the defaults in `config/base.toml` (built in), then an optional
//! file named by `LAPOR_CONFIG`, then `LAPOR__SECTION__KEY` environment variables. Loaded and
//! validated once at start-up; an error names the key and the variable that sets it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

const BASE: &str = include_str!("../../config/base.toml");
const DEV_PSEUDONYM_KEY: &str = "development-only-pseudonym-key";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}` (environment variable {env}): {reason}")]
    Invalid {
        key: String,
        env: String,
        reason: String,
    },
}

fn invalid(key: &str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        env: format!("LAPOR__{}", key.replace('.', "__").to_uppercase()),
        reason: reason.to_string(),
    }
}

/// A value that must not be printed: `Debug` shows only whether it is set.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<set>)"
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: Environment,
    pub amqp: AmqpSettings,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub ops: OpsSettings,
    pub telemetry: TelemetrySettings,
    pub data: DataSettings,
    pub privacy: PrivacySettings,
    pub outbox: OutboxSettings,
    pub verifier: VerifierSettings,
    #[serde(default)]
    pub review: ReviewSettings,
    pub sla: SlaSettings,
    pub shutdown: ShutdownSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    pub url: String,
    #[serde(default)]
    pub management_url: String,
    pub prefetch: u16,
    pub batch_max: u16,
    pub consumer_channels: u16,
    pub publish_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub delivery_limit: u32,
}

impl AmqpSettings {
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub create_if_missing: bool,
    pub migrate: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub bind: String,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    /// Submissions that arrive together are stored in one transaction: at most this many.
    pub submit_batch_max: usize,
    /// Transactions storing submissions at once.
    pub submit_writers: usize,
    /// Submissions intake holds at once, from their request's arrival to their answer. One
    /// more is refused at once with 503 and `Retry-After`, so that a surge beyond what the
    /// database can store queues at the senders, not in intake's memory.
    pub submit_in_flight_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OpsSettings {
    pub verifier: String,
    pub distributor: String,
    pub sla_monitor: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    #[serde(default)]
    pub otlp_endpoint: String,
    pub log_format: LogFormat,
    pub log_filter: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DataSettings {
    #[serde(default)]
    pub dir: String,
}

impl DataSettings {
    pub fn dir(&self) -> Option<PathBuf> {
        (!self.dir.is_empty()).then(|| PathBuf::from(&self.dir))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PrivacySettings {
    pub pseudonym_key: Secret,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutboxSettings {
    pub batch: u32,
    pub relay_workers: u32,
    pub poll_interval_ms: u64,
    /// Producers hand their committed rows straight to their relay (see `outbox::Handoff`).
    pub handoff: bool,
    /// The most case events of one routing key one message on `lapor.events` carries
    /// (`messages::batch`); 1 publishes each alone.
    pub events_per_message: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VerifierSettings {
    pub duplicate_window_days: u32,
    pub duplicate_similarity: f64,
    pub review_threshold: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReviewSettings {
    /// Officer name → bearer token.
    #[serde(default)]
    pub officers: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SlaSettings {
    pub zone: String,
    pub handling_working_days: u32,
    pub followup_working_days: u32,
    pub autoclose_working_days: u32,
    pub reminders: Vec<f64>,
    pub escalation_working_days: Vec<u32>,
    pub sweep_interval_ms: u64,
    pub sweep_batch: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShutdownSettings {
    pub drain_delay_ms: u64,
    pub grace_period_secs: u64,
}

impl ShutdownSettings {
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }
}

impl Settings {
    /// Loads from the process environment (and `LAPOR_CONFIG` when set).
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("LAPOR_CONFIG").ok().filter(|s| !s.is_empty());
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_from(file.as_deref(), env)
    }

    /// Loads from an explicit file and environment map, so tests never touch the process
    /// environment.
    pub fn load_from(
        file: Option<&str>,
        env: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(BASE, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::with_name(path).required(true));
        }
        let env_map: std::collections::HashMap<String, String> = env.into_iter().collect();
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("LAPOR")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("sla.reminders")
                    .with_list_parse_key("sla.escalation_working_days")
                    .source(Some(env_map)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults, for tests and tools.
    pub fn defaults() -> Self {
        Self::load_from(None, BTreeMap::new()).expect("the built-in defaults are valid")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        lapin::uri::AMQPUri::from_str(&self.amqp.url)
            .map_err(|e| invalid("amqp.url", format!("not an AMQP URL: {e}")))?;
        if !self.amqp.management_url.is_empty() && !self.amqp.management_url.starts_with("http") {
            return Err(invalid("amqp.management_url", "must be an http(s) URL"));
        }
        positive("amqp.prefetch", self.amqp.prefetch as u64)?;
        positive("amqp.batch_max", self.amqp.batch_max as u64)?;
        positive("amqp.consumer_channels", self.amqp.consumer_channels as u64)?;
        positive("amqp.publish_timeout_ms", self.amqp.publish_timeout_ms)?;
        positive("amqp.connect_timeout_ms", self.amqp.connect_timeout_ms)?;
        positive("amqp.delivery_limit", self.amqp.delivery_limit as u64)?;
        sqlx::postgres::PgConnectOptions::from_str(&self.database.url)
            .map_err(|e| invalid("database.url", format!("not a PostgreSQL URL: {e}")))?;
        positive(
            "database.max_connections",
            self.database.max_connections as u64,
        )?;
        socket("http.bind", &self.http.bind)?;
        socket("ops.verifier", &self.ops.verifier)?;
        socket("ops.distributor", &self.ops.distributor)?;
        socket("ops.sla_monitor", &self.ops.sla_monitor)?;
        positive("http.body_limit_bytes", self.http.body_limit_bytes as u64)?;
        positive("http.submit_batch_max", self.http.submit_batch_max as u64)?;
        positive("http.submit_writers", self.http.submit_writers as u64)?;
        positive(
            "http.submit_in_flight_max",
            self.http.submit_in_flight_max as u64,
        )?;
        if !self.telemetry.otlp_endpoint.is_empty()
            && !self.telemetry.otlp_endpoint.starts_with("http")
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                "must be an http(s) URL of an OTLP/HTTP collector",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter)
            .map_err(|e| invalid("telemetry.log_filter", e))?;
        if let Some(dir) = self.data.dir()
            && !dir.is_dir()
        {
            return Err(invalid(
                "data.dir",
                format!("{} is not a folder", dir.display()),
            ));
        }
        let key = self.privacy.pseudonym_key.expose();
        if key.len() < 16 {
            return Err(invalid(
                "privacy.pseudonym_key",
                "must be at least 16 characters",
            ));
        }
        if self.environment == Environment::Production && key == DEV_PSEUDONYM_KEY {
            return Err(invalid(
                "privacy.pseudonym_key",
                "the development key cannot be used in production",
            ));
        }
        positive("outbox.batch", self.outbox.batch as u64)?;
        positive("outbox.relay_workers", self.outbox.relay_workers as u64)?;
        positive(
            "outbox.events_per_message",
            self.outbox.events_per_message as u64,
        )?;
        if !(0.0..=1.0).contains(&self.verifier.duplicate_similarity) {
            return Err(invalid(
                "verifier.duplicate_similarity",
                "must be between 0 and 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.verifier.review_threshold) {
            return Err(invalid(
                "verifier.review_threshold",
                "must be between 0 and 1",
            ));
        }
        for (name, token) in &self.review.officers {
            if token.expose().len() < 16 {
                return Err(invalid(
                    &format!("review.officers.{name}"),
                    "token must be at least 16 characters",
                ));
            }
        }
        self.sla
            .zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| invalid("sla.zone", "not an IANA time zone (e.g. Asia/Jakarta)"))?;
        positive(
            "sla.handling_working_days",
            self.sla.handling_working_days as u64,
        )?;
        positive(
            "sla.followup_working_days",
            self.sla.followup_working_days as u64,
        )?;
        positive(
            "sla.autoclose_working_days",
            self.sla.autoclose_working_days as u64,
        )?;
        if self.sla.reminders.iter().any(|r| !(*r > 0.0 && *r < 1.0)) {
            return Err(invalid(
                "sla.reminders",
                "each reminder is a fraction strictly between 0 and 1",
            ));
        }
        if self
            .sla
            .escalation_working_days
            .windows(2)
            .any(|w| w[0] >= w[1])
        {
            return Err(invalid("sla.escalation_working_days", "must be increasing"));
        }
        positive("sla.sweep_interval_ms", self.sla.sweep_interval_ms)?;
        positive("sla.sweep_batch", self.sla.sweep_batch as u64)?;
        Ok(())
    }
}

fn positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn socket(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("{v:?} is not an address like 127.0.0.1:8080")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = Settings::defaults();
        assert_eq!(s.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(s.database.url, "postgres://postgres@127.0.0.1:5432/lapor");
        assert_eq!(s.http.bind, "127.0.0.1:8080");
        assert_eq!(s.sla.handling_working_days, 3);
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = Settings::load_from(
            None,
            env(&[
                ("LAPOR__AMQP__URL", "amqp://u:p@rabbit:5672/lapor"),
                ("LAPOR__DATABASE__MAX_CONNECTIONS", "4"),
                ("LAPOR__SLA__REMINDERS", "0.25,0.75"),
                ("LAPOR__REVIEW__OFFICERS__SITI", "a-long-enough-token-1"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.amqp.url, "amqp://u:p@rabbit:5672/lapor");
        assert_eq!(s.database.max_connections, 4);
        assert_eq!(s.sla.reminders, vec![0.25, 0.75]);
        assert_eq!(
            s.review.officers.get("siti").map(Secret::expose),
            Some("a-long-enough-token-1")
        );
    }

    #[test]
    fn errors_name_the_key_and_the_variable() {
        let err = Settings::load_from(None, env(&[("LAPOR__HTTP__BIND", "localhost")]))
            .expect_err("invalid");
        let msg = err.to_string();
        assert!(
            msg.contains("`http.bind`") && msg.contains("LAPOR__HTTP__BIND"),
            "{msg}"
        );

        let err = Settings::load_from(None, env(&[("LAPOR__AMQP__URL", "http://x")]))
            .expect_err("invalid");
        assert!(err.to_string().contains("LAPOR__AMQP__URL"), "{err}");

        let err = Settings::load_from(None, env(&[("LAPOR__DATABASE__MAX_CONNECTIONS", "many")]))
            .expect_err("invalid");
        assert!(err.to_string().contains("max_connections"), "{err}");
    }

    #[test]
    fn the_admission_limit_is_read_and_must_be_positive() {
        assert_eq!(Settings::defaults().http.submit_in_flight_max, 2048);
        let s = Settings::load_from(None, env(&[("LAPOR__HTTP__SUBMIT_IN_FLIGHT_MAX", "100")]))
            .expect("valid");
        assert_eq!(s.http.submit_in_flight_max, 100);
        let err = Settings::load_from(None, env(&[("LAPOR__HTTP__SUBMIT_IN_FLIGHT_MAX", "0")]))
            .expect_err("invalid");
        assert!(
            err.to_string().contains("http.submit_in_flight_max"),
            "{err}"
        );
    }

    #[test]
    fn production_refuses_the_development_key() {
        let err = Settings::load_from(None, env(&[("LAPOR__ENVIRONMENT", "production")]))
            .expect_err("invalid");
        assert!(err.to_string().contains("privacy.pseudonym_key"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::load_from(
            None,
            env(&[("LAPOR__REVIEW__OFFICERS__BUDI", "super-secret-token-42")]),
        )
        .expect("valid");
        let shown = format!("{s:?}");
        assert!(!shown.contains("super-secret-token-42") && !shown.contains(DEV_PSEUDONYM_KEY));
    }
}
