//! The one `Config` both hosts share. The plugin reads the `"Cohort"` section of Orthanc's
//! JSON configuration; the sidecar reads an optional JSON file with the same keys, then
//! `COHORT_*` environment variables. Every key is declared once in [`KEYS`] with both
//! spellings, and a bad value stops start-up with one line naming the key as the user
//! wrote it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;

use crate::domain;

/// Where the log lines go and in which shape (sidecar only; the plugin logs to Orthanc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    /// At most this many database connections (`None`: `store::postgres_connections()` on
    /// PostgreSQL, 8 on SQLite).
    pub database_connections: Option<u32>,
    /// HS256 secret; generated and kept in the `settings` table when absent.
    pub jwt_secret: Option<String>,
    pub cookie_secure: bool,
    pub access_token_minutes: u32,
    pub refresh_token_days: u32,
    pub bcrypt_cost: u32,
    /// Origins (`scheme://host[:port]`) allowed for CORS and for cookie-authenticated writes.
    pub allowed_origins: Vec<String>,
    pub max_upload_bytes: u64,
    pub max_export_bytes: u64,
    pub max_zip_entries: u64,
    pub max_uncompressed_bytes: u64,
    pub max_compression_ratio: u64,
    /// Where uploads and nested archives are spooled (`None`: the system's temporary
    /// directory). A full disk there is a 507 `insufficient_storage`.
    pub spool_dir: Option<std::path::PathBuf>,
    pub bootstrap_admin_email: Option<String>,
    pub bootstrap_admin_password: Option<String>,
    /// Group given to patients that reach Orthanc without Cohort; `None` leaves them ungrouped.
    pub auto_register_group: Option<String>,
    pub login_max_failures_per_account: u32,
    pub login_max_failures_per_ip: u32,
    pub login_failure_window_minutes: u32,
    /// Proxies whose `X-Forwarded-For` names the client (DESIGN.md §6 "Client address").
    pub trusted_proxies: Vec<crate::net::Cidr>,
    /// Sidecar: where `cohort serve` listens.
    pub listen: SocketAddr,
    /// Sidecar: a request head must arrive, and an answer start, within this many
    /// seconds (imports excepted); a third of it (at most 10 s) bounds body silences.
    pub request_timeout_seconds: u32,
    /// Sidecar: Orthanc's REST root.
    pub orthanc_url: String,
    pub orthanc_username: Option<String>,
    pub orthanc_password: Option<String>,
    /// Sidecar: requests in flight to Orthanc at most (each holds one of its HTTP threads).
    pub orthanc_connections: u32,
    /// Sidecar: Orthanc's `StorageDirectory`, when the sidecar can read it: instance files
    /// stored uncompressed are then read there rather than through Orthanc's HTTP API.
    pub orthanc_storage_directory: Option<std::path::PathBuf>,
    /// Plugin: require an admin session on Orthanc's native routes.
    pub protect_orthanc_api: bool,
    pub log_format: LogFormat,
    /// `/api/metrics` counts the registry's rows at most once per this many seconds.
    pub registry_count_seconds: u32,
    /// A node remembers the sort key of every this-many-th patient of a long list
    /// (`services::anchors`): a page deeper than that in the list is read from the
    /// nearest key before it, skipping fewer rows than this.
    pub list_anchor_rows: u32,
    /// Count every answer by route and status (and its latency) for `/api/metrics`;
    /// false only to measure what that costs.
    pub request_metrics: bool,
    /// Sidecar: on SIGTERM, how long requests in flight may take to finish before the
    /// long ones (imports) are cut, recording how far they got.
    pub shutdown_drain_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://cohort.db".into(),
            database_connections: None,
            jwt_secret: None,
            cookie_secure: true,
            access_token_minutes: 15,
            refresh_token_days: 7,
            bcrypt_cost: 12,
            allowed_origins: Vec::new(),
            max_upload_bytes: 4 << 30,
            max_export_bytes: 2 << 30,
            max_zip_entries: 100_000,
            max_uncompressed_bytes: 16 << 30,
            max_compression_ratio: 200,
            spool_dir: None,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            auto_register_group: None,
            login_max_failures_per_account: 10,
            login_max_failures_per_ip: 50,
            login_failure_window_minutes: 15,
            trusted_proxies: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            request_timeout_seconds: 30,
            orthanc_url: "http://127.0.0.1:8042".into(),
            orthanc_username: None,
            orthanc_connections: 32,
            orthanc_storage_directory: None,
            orthanc_password: None,
            protect_orthanc_api: true,
            log_format: LogFormat::Text,
            registry_count_seconds: 60,
            list_anchor_rows: 500,
            request_metrics: true,
            shutdown_drain_seconds: 30,
        }
    }
}

/// A configuration problem, displayed as one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A raw value as a source holds it: environment variables are strings, JSON is typed.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Str(&'a str),
    Json(&'a Value),
}

type Setter = fn(&mut Config, Raw<'_>) -> Result<(), String>;

/// One configuration key: its JSON name (plugin section, config file), its environment
/// variable, and how to parse it.
struct Key {
    json: &'static str,
    env: &'static str,
    set: Setter,
}

macro_rules! key {
    ($json:literal, $env:literal, |$c:ident, $r:ident| $body:expr) => {
        Key {
            json: $json,
            env: $env,
            set: |$c: &mut Config, $r: Raw<'_>| -> Result<(), String> {
                $body;
                Ok(())
            },
        }
    };
}

const KEYS: &[Key] = &[
    key!("DatabaseUrl", "COHORT_DATABASE_URL", |c, r| c.database_url = database_url(r)?),
    key!("DatabaseConnections", "COHORT_DATABASE_CONNECTIONS", |c, r| c.database_connections = Some(int(r, 1, 1024)? as u32)),
    key!("JwtSecret", "COHORT_JWT_SECRET", |c, r| c.jwt_secret = Some(jwt_secret(r)?)),
    key!("CookieSecure", "COHORT_COOKIE_SECURE", |c, r| c.cookie_secure = boolean(r)?),
    key!("AccessTokenMinutes", "COHORT_ACCESS_TOKEN_MINUTES", |c, r| c.access_token_minutes = int(r, 1, 24 * 60)? as u32),
    key!("RefreshTokenDays", "COHORT_REFRESH_TOKEN_DAYS", |c, r| c.refresh_token_days = int(r, 1, 365)? as u32),
    key!("BcryptCost", "COHORT_BCRYPT_COST", |c, r| c.bcrypt_cost = int(r, 10, 31)? as u32),
    key!("AllowedOrigins", "COHORT_ALLOWED_ORIGINS", |c, r| c.allowed_origins = origins(r)?),
    key!("MaxUploadBytes", "COHORT_MAX_UPLOAD_BYTES", |c, r| c.max_upload_bytes = int(r, 1024, u64::MAX)?),
    key!("MaxExportBytes", "COHORT_MAX_EXPORT_BYTES", |c, r| c.max_export_bytes = int(r, 1024, u64::from(u32::MAX))?),
    key!("MaxZipEntries", "COHORT_MAX_ZIP_ENTRIES", |c, r| c.max_zip_entries = int(r, 1, u64::MAX)?),
    key!("MaxUncompressedBytes", "COHORT_MAX_UNCOMPRESSED_BYTES", |c, r| c.max_uncompressed_bytes = int(r, 1024, u64::MAX)?),
    key!("MaxCompressionRatio", "COHORT_MAX_COMPRESSION_RATIO", |c, r| c.max_compression_ratio = int(r, 2, 100_000)?),
    key!("SpoolDir", "COHORT_SPOOL_DIR", |c, r| c.spool_dir = directory(r)?),
    key!("BootstrapAdminEmail", "COHORT_ADMIN_EMAIL", |c, r| c.bootstrap_admin_email = Some(email(r)?)),
    key!("BootstrapAdminPassword", "COHORT_ADMIN_PASSWORD", |c, r| c.bootstrap_admin_password = Some(password(r)?)),
    key!("AutoRegisterGroup", "COHORT_AUTO_REGISTER_GROUP", |c, r| c.auto_register_group = non_empty(r)?),
    key!("LoginMaxFailuresPerAccount", "COHORT_LOGIN_MAX_FAILURES_PER_ACCOUNT", |c, r| c.login_max_failures_per_account =
        int(r, 1, 100_000)? as u32),
    key!("LoginMaxFailuresPerIp", "COHORT_LOGIN_MAX_FAILURES_PER_IP", |c, r| c.login_max_failures_per_ip = int(r, 1, 1_000_000)? as u32),
    key!("LoginFailureWindowMinutes", "COHORT_LOGIN_FAILURE_WINDOW_MINUTES", |c, r| c.login_failure_window_minutes =
        int(r, 1, 24 * 60)? as u32),
    key!("TrustedProxies", "COHORT_TRUSTED_PROXIES", |c, r| c.trusted_proxies = cidrs(r)?),
    key!("Listen", "COHORT_LISTEN", |c, r| c.listen = socket_addr(r)?),
    key!("RequestTimeoutSeconds", "COHORT_REQUEST_TIMEOUT_SECONDS", |c, r| c.request_timeout_seconds = int(r, 1, 3600)? as u32),
    key!("OrthancUrl", "COHORT_ORTHANC_URL", |c, r| c.orthanc_url = http_url(r)?),
    key!("OrthancUsername", "COHORT_ORTHANC_USERNAME", |c, r| c.orthanc_username = non_empty(r)?),
    key!("OrthancPassword", "COHORT_ORTHANC_PASSWORD", |c, r| c.orthanc_password = non_empty(r)?),
    key!("OrthancConnections", "COHORT_ORTHANC_CONNECTIONS", |c, r| c.orthanc_connections = int(r, 2, 4096)? as u32),
    key!("OrthancStorageDirectory", "COHORT_ORTHANC_STORAGE_DIRECTORY", |c, r| c.orthanc_storage_directory = directory(r)?),
    key!("ProtectOrthancApi", "COHORT_PROTECT_ORTHANC_API", |c, r| c.protect_orthanc_api = boolean(r)?),
    key!("LogFormat", "COHORT_LOG_FORMAT", |c, r| c.log_format = log_format(r)?),
    key!("ShutdownDrainSeconds", "COHORT_SHUTDOWN_DRAIN_SECONDS", |c, r| c.shutdown_drain_seconds = int(r, 0, 3600)? as u32),
    key!("RequestMetrics", "COHORT_REQUEST_METRICS", |c, r| c.request_metrics = boolean(r)?),
    key!("RegistryCountSeconds", "COHORT_REGISTRY_COUNT_SECONDS", |c, r| c.registry_count_seconds = int(r, 1, 86_400)? as u32),
    key!("ListAnchorRows", "COHORT_LIST_ANCHOR_ROWS", |c, r| c.list_anchor_rows = int(r, 2, 1_000_000)? as u32),
];

/// Environment variables with this prefix are the test harness's, not configuration.
const ENV_IGNORED_PREFIX: &str = "COHORT_TEST_";
/// The sidecar's pointer to a JSON configuration file; read by the sidecar, not a key.
pub const ENV_CONFIG_FILE: &str = "COHORT_CONFIG";

impl Config {
    /// Applies a JSON object (the plugin's `"Cohort"` section, or the sidecar's file).
    /// Unknown keys are errors: a typo must not silently fall back to a default.
    pub fn apply_json(&mut self, section: &Value) -> Result<(), ConfigError> {
        let Some(map) = section.as_object() else {
            return Err(ConfigError { key: "Cohort".into(), message: "must be a JSON object".into() });
        };
        for (name, value) in map {
            let key = KEYS.iter().find(|k| k.json == name).ok_or_else(|| ConfigError {
                key: name.clone(),
                message: format!("unknown key (known keys: {})", KEYS.iter().map(|k| k.json).collect::<Vec<_>>().join(", ")),
            })?;
            if value.is_null() {
                continue;
            }
            (key.set)(self, Raw::Json(value)).map_err(|message| ConfigError { key: name.clone(), message })?;
        }
        Ok(())
    }

    /// Applies `COHORT_*` variables (any other variable is ignored).
    pub fn apply_env<I>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: BTreeMap<String, String> =
            vars.into_iter().filter(|(k, _)| k.starts_with("COHORT_") && !k.starts_with(ENV_IGNORED_PREFIX)).collect();
        for (name, value) in &vars {
            if name == ENV_CONFIG_FILE {
                continue;
            }
            let key =
                KEYS.iter().find(|k| k.env == name).ok_or_else(|| ConfigError { key: name.clone(), message: "unknown setting".into() })?;
            (key.set)(self, Raw::Str(value)).map_err(|message| ConfigError { key: name.clone(), message })?;
        }
        Ok(())
    }

    /// Checks rules that involve several keys. `env` chooses which spelling to report.
    pub fn validate(&self, env: bool) -> Result<(), ConfigError> {
        let name = |json: &str| -> String {
            KEYS.iter().find(|k| k.json == json).map(|k| if env { k.env } else { k.json }).unwrap_or(json).to_string()
        };
        match (&self.bootstrap_admin_email, &self.bootstrap_admin_password) {
            (Some(_), None) => Err(ConfigError {
                key: name("BootstrapAdminPassword"),
                message: format!("missing: required when {} is set", name("BootstrapAdminEmail")),
            }),
            (None, Some(_)) => Err(ConfigError {
                key: name("BootstrapAdminEmail"),
                message: format!("missing: required when {} is set", name("BootstrapAdminPassword")),
            }),
            _ => Ok(()),
        }?;
        if self.orthanc_username.is_some() != self.orthanc_password.is_some() {
            let missing = if self.orthanc_username.is_some() { "OrthancPassword" } else { "OrthancUsername" };
            return Err(ConfigError { key: name(missing), message: "missing: Orthanc credentials come as a pair".into() });
        }
        Ok(())
    }

    /// Builds the sidecar's configuration: defaults, then the optional JSON file named by
    /// `COHORT_CONFIG`, then the environment.
    pub fn from_env_and_file<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut config = Config::default();
        if let Some((_, path)) = vars.iter().find(|(k, _)| k == ENV_CONFIG_FILE) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError { key: ENV_CONFIG_FILE.into(), message: format!("cannot read {path}: {e}") })?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| ConfigError { key: ENV_CONFIG_FILE.into(), message: format!("{path} is not valid JSON: {e}") })?;
            // Accept both a bare object of keys and one wrapped in a "Cohort" section.
            let section = value.get("Cohort").unwrap_or(&value);
            config.apply_json(section)?;
        }
        config.apply_env(vars)?;
        config.validate(true)?;
        Ok(config)
    }

    /// Builds the plugin's configuration from Orthanc's merged configuration document.
    pub fn from_orthanc_configuration(orthanc: &Value) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(section) = orthanc.get("Cohort") {
            config.apply_json(section)?;
        }
        config.validate(false)?;
        Ok(config)
    }

    /// Whether the database URL names PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")
    }
}

fn text<'a>(r: Raw<'a>) -> Result<&'a str, String> {
    match r {
        Raw::Str(s) => Ok(s),
        Raw::Json(Value::String(s)) => Ok(s),
        Raw::Json(other) => Err(format!("must be a string (got {other})")),
    }
}

fn non_empty(r: Raw<'_>) -> Result<Option<String>, String> {
    let s = text(r)?.trim();
    Ok((!s.is_empty()).then(|| s.to_string()))
}

fn boolean(r: Raw<'_>) -> Result<bool, String> {
    match r {
        Raw::Json(Value::Bool(b)) => Ok(*b),
        _ => match text(r).map_err(|_| "must be true or false".to_string())?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            other => Err(format!("must be true or false (got {other:?})")),
        },
    }
}

fn int(r: Raw<'_>, min: u64, max: u64) -> Result<u64, String> {
    let n = match r {
        Raw::Json(Value::Number(n)) => n.as_u64(),
        _ => text(r).ok().and_then(|s| s.trim().parse::<u64>().ok()),
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be an integer between {min} and {max}")),
    }
}

fn database_url(r: Raw<'_>) -> Result<String, String> {
    let s = text(r)?.trim();
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if known.iter().any(|p| s.starts_with(p)) {
        Ok(s.to_string())
    } else {
        Err(format!("must start with sqlite: or postgres:// (got {s:?})"))
    }
}

fn jwt_secret(r: Raw<'_>) -> Result<String, String> {
    let s = text(r)?;
    if s.len() < 32 {
        return Err("must be at least 32 bytes (256 bits) of random data".into());
    }
    Ok(s.to_string())
}

fn origins(r: Raw<'_>) -> Result<Vec<String>, String> {
    let items: Vec<String> = match r {
        Raw::Json(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| "must be a list of strings".to_string()))
            .collect::<Result<_, _>>()?,
        _ => text(r)?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };
    items
        .into_iter()
        .map(|o| {
            let parsed = url::Url::parse(&o).map_err(|_| format!("{o:?} is not an origin like https://app.example.org"))?;
            let origin = parsed.origin().ascii_serialization();
            if origin == "null" || parsed.path() != "/" && !parsed.path().is_empty() || o.trim_end_matches('/') != origin {
                return Err(format!("{o:?} is not an origin like https://app.example.org (no path)"));
            }
            Ok(origin)
        })
        .collect()
}

fn cidrs(r: Raw<'_>) -> Result<Vec<crate::net::Cidr>, String> {
    let items: Vec<String> = match r {
        Raw::Json(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| "must be a list of strings".to_string()))
            .collect::<Result<_, _>>()?,
        _ => text(r)?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };
    items.iter().map(|s| s.parse()).collect()
}

fn email(r: Raw<'_>) -> Result<String, String> {
    domain::normalize_email(text(r)?).map_err(|e| e.to_string())
}

fn password(r: Raw<'_>) -> Result<String, String> {
    let s = text(r)?;
    domain::check_password_rules(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// An existing directory, or nothing (empty).
fn directory(r: Raw<'_>) -> Result<Option<std::path::PathBuf>, String> {
    let Some(s) = non_empty(r)? else { return Ok(None) };
    let path = std::path::PathBuf::from(s);
    if !path.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    Ok(Some(path))
}

fn socket_addr(r: Raw<'_>) -> Result<SocketAddr, String> {
    let s = text(r)?.trim();
    s.parse().map_err(|_| format!("must be an address like 127.0.0.1:8000 (got {s:?})"))
}

fn http_url(r: Raw<'_>) -> Result<String, String> {
    let s = text(r)?.trim();
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(s.trim_end_matches('/').to_string()),
        _ => Err(format!("must be an http:// or https:// URL (got {s:?})")),
    }
}

fn log_format(r: Raw<'_>) -> Result<LogFormat, String> {
    match text(r)?.trim() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        other => Err(format!("must be json or text (got {other:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::from_env_and_file(Vec::new()).expect("defaults are valid");
        assert_eq!(c.database_url, "sqlite://cohort.db");
        assert!(c.cookie_secure);
        assert_eq!((c.access_token_minutes, c.refresh_token_days, c.bcrypt_cost), (15, 7, 12));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.orthanc_url, "http://127.0.0.1:8042");
        assert!(c.protect_orthanc_api);
        assert_eq!(c.shutdown_drain_seconds, 30, "the drain deadline defaults to 30 s");
        assert_eq!(c.registry_count_seconds, 60);
        assert_eq!(c.database_connections, None, "the pool's size is the backend's default");
    }

    #[test]
    fn env_values_are_parsed() {
        let c = Config::from_env_and_file(env(&[
            ("COHORT_COOKIE_SECURE", "false"),
            ("COHORT_BCRYPT_COST", "10"),
            ("COHORT_ALLOWED_ORIGINS", "https://a.example.org, http://localhost:5173"),
            ("COHORT_LISTEN", "0.0.0.0:9000"),
            ("PATH", "/bin"),
        ]))
        .expect("valid");
        assert!(!c.cookie_secure);
        assert_eq!(c.bcrypt_cost, 10);
        assert_eq!(c.allowed_origins, vec!["https://a.example.org", "http://localhost:5173"]);
        assert_eq!(c.listen.port(), 9000);
        let c = Config::from_env_and_file(env(&[("COHORT_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1")])).expect("valid");
        assert_eq!(c.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        let e = Config::from_env_and_file(env(&[("COHORT_TRUSTED_PROXIES", "10.0.0.0/40")])).expect_err("bad prefix");
        assert_eq!(e.key, "COHORT_TRUSTED_PROXIES");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let e = Config::from_env_and_file(env(&[("COHORT_BCRYPT_COST", "4")])).expect_err("cost 4 is too low");
        assert_eq!(e.key, "COHORT_BCRYPT_COST");
        assert!(e.to_string().starts_with("invalid configuration: COHORT_BCRYPT_COST: "), "{e}");
        let e = Config::from_env_and_file(env(&[("COHORT_DATABASE_URL", "mysql://x")])).expect_err("mysql");
        assert_eq!(e.key, "COHORT_DATABASE_URL");
        let e = Config::from_env_and_file(env(&[("COHORT_JWT_SECRET", "short")])).expect_err("short secret");
        assert_eq!(e.key, "COHORT_JWT_SECRET");
        let e = Config::from_env_and_file(env(&[("COHORT_ALLOWED_ORIGINS", "https://a.org/path")])).expect_err("path");
        assert_eq!(e.key, "COHORT_ALLOWED_ORIGINS");
        for bad in ["0", "1025", "many"] {
            let e = Config::from_env_and_file(env(&[("COHORT_DATABASE_CONNECTIONS", bad)])).expect_err(bad);
            assert_eq!(e.key, "COHORT_DATABASE_CONNECTIONS");
        }
        let c = Config::from_env_and_file(env(&[("COHORT_DATABASE_CONNECTIONS", "4")])).expect("valid");
        assert_eq!(c.database_connections, Some(4));
    }

    #[test]
    fn unknown_keys_and_half_pairs_are_refused() {
        let e = Config::from_env_and_file(env(&[("COHORT_DATABSE_URL", "sqlite://x.db")])).expect_err("typo");
        assert_eq!(e.key, "COHORT_DATABSE_URL");
        let e = Config::from_env_and_file(env(&[("COHORT_ADMIN_EMAIL", "a@b.org")])).expect_err("no password");
        assert_eq!(e.key, "COHORT_ADMIN_PASSWORD");
        let e =
            Config::from_orthanc_configuration(&serde_json::json!({"Cohort": {"CookieSecur": false}})).expect_err("typo in plugin section");
        assert_eq!(e.key, "CookieSecur");
        let e = Config::from_orthanc_configuration(&serde_json::json!({"Cohort": {"BcryptCost": "high"}})).expect_err("not a number");
        assert_eq!(e.key, "BcryptCost");
    }

    #[test]
    fn plugin_section_uses_json_types() {
        let c = Config::from_orthanc_configuration(&serde_json::json!({
            "Name": "Orthanc",
            "Cohort": {"CookieSecure": false, "BcryptCost": 11, "AllowedOrigins": ["https://x.org"],
                       "ProtectOrthancApi": false, "DatabaseUrl": "sqlite:///var/lib/cohort.db"}
        }))
        .expect("valid");
        assert!(!c.cookie_secure && !c.protect_orthanc_api);
        assert_eq!(c.bcrypt_cost, 11);
        assert_eq!(c.allowed_origins, vec!["https://x.org"]);
        assert_eq!(c.database_url, "sqlite:///var/lib/cohort.db");
    }
}
