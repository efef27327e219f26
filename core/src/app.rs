//! The application state both hosts build once and hand to the router.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::auth::cookies::CookieJar;
use crate::auth::jwt::JwtKeys;
use crate::auth::passwords::Passwords;
use crate::budget::ByteBudget;
use crate::config::Config;
use crate::domain::Id;
use crate::pacs::Pacs;
use crate::store::sessions::SessionAuth;
use crate::store::tokens::TokenAuth;
use crate::store::Store;

/// Everything a request handler needs, shared behind an `Arc`.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub jwt: JwtKeys,
    pub passwords: Passwords,
    pub cookies: CookieJar,
    pub sessions: SessionCache,
    /// Personal API token lookups, keyed by the token's hash.
    pub tokens: TokenCache,
    pub instance_owners: OwnerCache,
    /// What answers built in memory (the plugin's exports) may hold at once, all
    /// together: `MaxExportBytes`.
    pub export_memory: Arc<ByteBudget>,
    /// Groups' export policies, for the image proxy's hot path.
    pub export_policies: TtlCache<Id, crate::domain::ExportPolicy>,
    /// Search totals and small result id lists, valid while the registry's generation
    /// in the database is unchanged.
    pub searches: crate::services::search_cache::SearchCache,
    /// Patient lists' answers, valid while their scope's generation in the database is
    /// unchanged.
    pub pages: crate::services::page_cache::PageCache,
    /// One search of a key at a time on this node.
    pub search_turns: crate::services::search_cache::Turns,
    /// Sort keys of every `ListAnchorRows`-th patient of long lists, valid while their
    /// scope's generation in the database is unchanged: where deep pages start reading.
    pub anchors: crate::services::anchors::AnchorCache,
    /// One read of a list's anchors at a time on this node.
    pub anchor_turns: crate::services::anchors::AnchorTurns,
    /// The DICOM store; `None` only in tests of the account side.
    pub pacs: Option<Arc<dyn Pacs>>,
    /// Which program hosts the core.
    pub host: Host,
    /// The registry's sizes for `/api/metrics`, counted at most once per
    /// `RegistryCountSeconds` (with when they were counted).
    pub registry_sizes: crate::metrics::RegistryCount,
    /// Fired when the host stops waiting for the requests in flight (the drain deadline
    /// passed): long work stops where it is and records how far it got.
    pub abort: Abort,
}

/// A one-way signal: once fired, stays fired.
#[derive(Debug)]
pub struct Abort(tokio::sync::watch::Sender<bool>);

impl Default for Abort {
    fn default() -> Self {
        Abort(tokio::sync::watch::channel(false).0)
    }
}

impl Abort {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once fired.
    pub async fn fired(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`, so this only ends when fired.
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

/// Which program hosts the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Sidecar,
    Plugin,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("backend", &self.store.backend()).finish_non_exhaustive()
    }
}

pub type SharedApp = Arc<App>;

/// Why the application could not start; displayed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl App {
    /// Connects and migrates the database, settles the JWT secret and creates the
    /// bootstrap admin when configured and no admin exists yet.
    pub async fn start(config: Config, pacs: Option<Arc<dyn Pacs>>, host: Host) -> Result<SharedApp, StartError> {
        let store = Store::connect_with(&config.database_url, config.database_connections)
            .await
            .map_err(|e| StartError(format!("cannot open the database (DatabaseUrl): {e}")))?;
        store.migrate().await.map_err(|e| StartError(format!("cannot migrate the database: {e}")))?;
        let app = App::with_store(config, store, pacs, host).await?;
        crate::services::bootstrap::bootstrap_admin(&app)
            .await
            .map_err(|e| StartError(format!("cannot create the bootstrap admin (BootstrapAdminEmail): {e}")))?;
        Ok(app)
    }

    /// Whether answers may be streamed (the sidecar) or must be built in memory first
    /// (the plugin: Orthanc 1.10.1 cannot stream a plugin's answer).
    pub fn streams_answers(&self) -> bool {
        self.host == Host::Sidecar
    }

    /// Whether request bodies arrive already in memory (the plugin: Orthanc reads the
    /// whole body before calling it), so copying them to disk would only cost.
    pub fn bodies_in_memory(&self) -> bool {
        self.host == Host::Plugin
    }

    /// The DICOM store, or 503 `orthanc_unavailable` when none is configured.
    pub fn pacs(&self) -> Result<&Arc<dyn Pacs>, crate::error::ApiError> {
        self.pacs.as_ref().ok_or_else(|| crate::error::ApiError::unavailable("orthanc_unavailable", "no DICOM store configured"))
    }

    /// Builds the state on an already migrated store.
    pub async fn with_store(config: Config, store: Store, pacs: Option<Arc<dyn Pacs>>, host: Host) -> Result<SharedApp, StartError> {
        let secret = match &config.jwt_secret {
            Some(s) => s.clone(),
            None => crate::services::bootstrap::shared_jwt_secret(&store)
                .await
                .map_err(|e| StartError(format!("cannot read or store the JWT secret: {e}")))?,
        };
        let passwords = Passwords::new(config.bcrypt_cost).await.map_err(|e| StartError(e.to_string()))?;
        Ok(Arc::new(App {
            jwt: JwtKeys::new(secret.as_bytes()),
            passwords,
            cookies: CookieJar { secure: config.cookie_secure },
            sessions: SessionCache::new(CACHE_TTL),
            tokens: TokenCache::new(CACHE_TTL),
            instance_owners: OwnerCache::new(CACHE_TTL),
            export_memory: ByteBudget::new(config.max_export_bytes),
            export_policies: TtlCache::new(CACHE_TTL),
            searches: Default::default(),
            pages: Default::default(),
            search_turns: Default::default(),
            anchors: Default::default(),
            anchor_turns: Default::default(),
            registry_sizes: crate::metrics::RegistryCount::new(Duration::from_secs(u64::from(config.registry_count_seconds))),
            abort: Abort::default(),
            store,
            config,
            pacs,
            host,
        }))
    }
}

/// How long a node trusts what it read about a session or an instance's owner before
/// reading it again: a revocation or a patient moved to another group takes effect at
/// once on the node that made the change and within this delay on the others.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 10_000;

/// A small map whose entries expire after a fixed delay, bounded in size (when full,
/// the expired entries go, or all of them). It only holds copies of what was read or
/// checked elsewhere (database rows, verified tokens), used on the hot paths (every
/// authenticated request, every image download).
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    /// Read-locked by lookups (every request makes several; 32 Orthanc threads on two
    /// cores waited on a mutex here), write-locked by changes.
    map: RwLock<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(ttl, CACHE_MAX)
    }

    /// A cache of at most `max` entries.
    pub fn bounded(ttl: Duration, max: usize) -> Self {
        TtlCache { ttl, max, map: RwLock::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<K, (Instant, V)>> {
        // A poisoned cache only holds copies of database rows: keep using it.
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    pub fn forget<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.lock().remove(key);
    }

    /// Forgets every entry whose value matches.
    pub fn forget_where(&self, matches: impl Fn(&V) -> bool) {
        self.lock().retain(|_, (_, v)| !matches(v));
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Session lookups, so authenticating a request is usually free.
pub type SessionCache = TtlCache<String, std::sync::Arc<SessionAuth>>;

/// API token lookups (by the token's SHA-256), so authenticating a script's request is
/// usually free too.
pub type TokenCache = TtlCache<String, TokenAuth>;

/// Whose instance is this: `(patient id, patient group)`, for the image proxy.
pub type OwnerCache = TtlCache<String, (Id, Option<Id>)>;

/// The client's address, put in the request extensions by the host (the sidecar from
/// the TCP peer, the plugin from Orthanc's request filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);
