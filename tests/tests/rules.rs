//! Account rules checked on the core router served in-process over real HTTP, on
//! SQLite and PostgreSQL: throttling, inactive users, the last admin, deletions and the
//! audit trail they leave, validation, pagination, search, groups, CORS, the OpenAPI
//! document, a closed store, and patient list totals and cached searches across two
//! nodes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use cohort_core::{App, ClientAddr, Config, SharedApp};
use cohort_e2e::{per_backend, Backend, Client, TestDatabase};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Connection;

const ADMIN: &str = "root@rules.test";
const ADMIN_PW: &str = "root-password-1";

struct Served {
    url: String,
    app: SharedApp,
    /// The database, when this node created it (a second node shares the first's).
    _db: Option<TestDatabase>,
    db_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Served {
    fn client(&self) -> Client {
        Client::new(&self.url)
    }

    async fn admin(&self) -> Client {
        let c = self.client();
        c.login(ADMIN, ADMIN_PW).await.expect_status(200);
        c
    }

    /// Creates a user and returns their id.
    async fn user(&self, admin: &Client, email: &str, body: Value) -> i64 {
        let mut b = json!({"email": email, "password": "user-password-1", "role": "user"});
        if let (Some(b), Some(extra)) = (b.as_object_mut(), body.as_object()) {
            b.extend(extra.clone());
        }
        admin.post("/api/users", &b).await.expect_status(201)["id"].as_i64().expect("id")
    }
}

/// The core router on a local port, configured like a deployment plus `tweak`.
async fn serve(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Served {
    let db = TestDatabase::create(backend).await;
    let mut served = serve_on(&db.url, tweak).await;
    served._db = Some(db);
    served
}

/// Another node on the database at `db_url`.
async fn serve_on(db_url: &str, tweak: impl FnOnce(&mut Config)) -> Served {
    let mut config = Config { database_url: db_url.to_string(), cookie_secure: false, bcrypt_cost: 10, ..Config::default() };
    config.bootstrap_admin_email = Some(ADMIN.into());
    config.bootstrap_admin_password = Some(ADMIN_PW.into());
    tweak(&mut config);
    let app = App::start(config, None, cohort_core::Host::Sidecar).await.expect("app starts");
    let router = cohort_core::api::router(app.clone()).layer(middleware::from_fn(
        |ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request, next: Next| async move {
            req.extensions_mut().insert(ClientAddr(peer.ip()));
            next.run(req).await
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Served { url, app, _db: None, db_url: db_url.to_string(), server }
}

async fn login_throttling(backend: Backend) {
    let s = serve(backend, |c| {
        c.login_max_failures_per_account = 3;
        c.login_max_failures_per_ip = 5;
    })
    .await;
    let admin = s.admin().await;
    s.user(&admin, "victim@rules.test", json!({})).await;
    let c = s.client();
    // Successful logins never count: more of them than either limit, from the same IP
    // and on the same account, throttle nothing.
    for _ in 0..6 {
        c.login("victim@rules.test", "user-password-1").await.expect_status(200);
    }
    for _ in 0..3 {
        c.login("victim@rules.test", "wrong-password-1").await.expect_error(401, "invalid_credentials");
    }
    // Locked now, even with the right password; Retry-After says for how long.
    let r = c.login("victim@rules.test", "user-password-1").await;
    r.expect_error(429, "too_many_attempts");
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=15 * 60).contains(&retry), "{retry}");
    // Unknown accounts are throttled the same way, so a 429 reveals nothing.
    for _ in 0..2 {
        c.login("ghost@rules.test", "wrong-password-1").await.expect_error(401, "invalid_credentials");
    }
    // That made five failures from this IP: everyone from it waits, even the admin.
    c.login(ADMIN, ADMIN_PW).await.expect_error(429, "too_many_attempts");
    let audit = admin.get("/api/audit?action=LOGIN_FAILED&page_size=50").await.expect_status(200);
    let denied = audit["items"].as_array().expect("items").iter().filter(|e| e["outcome"] == "denied").count();
    assert_eq!(denied, 2, "each throttled attempt is audited: {audit}");
    // Throttling refuses logins, not sessions: the admin's (opened before) still works.
    admin.get("/api/auth/me").await.expect_status(200);
}
per_backend!(login_throttling);

async fn inactive_users_are_locked_out(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    let id = s.user(&admin, "leaver@rules.test", json!({})).await;
    let user = s.client();
    user.login("leaver@rules.test", "user-password-1").await.expect_status(200);
    user.get("/api/auth/me").await.expect_status(200);

    let updated = admin.put(&format!("/api/users/{id}"), &json!({"status": "inactive"})).await.expect_status(200);
    assert_eq!(updated["status"], "inactive");
    user.get("/api/auth/me").await.expect_error(401, "session_revoked");
    user.login("leaver@rules.test", "user-password-1").await.expect_error(403, "account_inactive");
    // A wrong password still says nothing about the account.
    user.login("leaver@rules.test", "wrong-password-1").await.expect_error(401, "invalid_credentials");

    admin.put(&format!("/api/users/{id}"), &json!({"status": "active"})).await.expect_status(200);
    user.login("leaver@rules.test", "user-password-1").await.expect_status(200);
}
per_backend!(inactive_users_are_locked_out);

async fn the_last_admin_stays(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    let me = admin.get("/api/auth/me").await.expect_status(200);
    let my_id = me["id"].as_i64().expect("id");
    admin.put(&format!("/api/users/{my_id}"), &json!({"role": "user"})).await.expect_error(409, "last_admin");
    admin.put(&format!("/api/users/{my_id}"), &json!({"status": "inactive"})).await.expect_error(409, "last_admin");
    admin.delete(&format!("/api/users/{my_id}")).await.expect_error(409, "last_admin");

    // With a second admin, the first may step down.
    let second = s.user(&admin, "second@rules.test", json!({"role": "admin"})).await;
    admin.put(&format!("/api/users/{my_id}"), &json!({"role": "user"})).await.expect_status(200);
    // Now the second admin is the last one.
    let other = s.client();
    other.login("second@rules.test", "user-password-1").await.expect_status(200);
    other.delete(&format!("/api/users/{second}")).await.expect_error(409, "last_admin");
    // And the demoted admin lost admin rights at once (no stale cached role).
    admin.get("/api/users").await.expect_error(403, "forbidden");
}
per_backend!(the_last_admin_stays);

async fn deleting_a_user_keeps_their_audit_trail(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    let id = s.user(&admin, "gone@rules.test", json!({})).await;
    let user = s.client();
    user.login("gone@rules.test", "user-password-1").await.expect_status(200);
    admin.delete(&format!("/api/users/{id}")).await.expect_status(204);
    admin.get(&format!("/api/users/{id}")).await.expect_error(404, "not_found");
    user.get("/api/auth/me").await.expect_error(401, "session_revoked");
    let audit = admin.get("/api/audit?page_size=200").await.expect_status(200);
    let items = audit["items"].as_array().expect("items");
    let login = items.iter().find(|e| e["action"] == "LOGIN" && e["actor_email"] == "gone@rules.test").expect("login row kept");
    assert_eq!(login["user_id"], Value::Null, "user_id cleared, email kept");
    assert!(items
        .iter()
        .any(|e| e["action"] == "DELETE" && e["resource_type"] == "user" && e["resource_id"].as_str() == Some(id.to_string().as_str())));
    user.login("gone@rules.test", "user-password-1").await.expect_error(401, "invalid_credentials");
}
per_backend!(deleting_a_user_keeps_their_audit_trail);

async fn validation_pagination_and_search(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    let bad = [
        (json!({"email": "not-an-email", "password": "user-password-1", "role": "user"}), "email"),
        (json!({"email": "a@rules.test", "password": "short", "role": "user"}), "password"),
        (json!({"email": "a@rules.test", "password": "p".repeat(73), "role": "user"}), "password"),
        (json!({"email": "a@rules.test", "password": "user-password-1", "role": "superuser"}), "role"),
        (json!({"email": "a@rules.test", "password": "user-password-1", "role": "user", "group_id": 999}), "group_id"),
        (json!({"password": "user-password-1", "role": "user"}), "email"),
    ];
    for (body, field) in bad {
        let err = admin.post("/api/users", &body).await.expect_error(422, "validation_error");
        let msg = err["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.starts_with(field), "{body}: {msg}");
    }
    s.user(&admin, "eloise@rules.test", json!({"first_name": "Éloïse", "last_name": "Dupré"})).await;
    admin
        .post("/api/users", &json!({"email": "ELOISE@rules.test", "password": "user-password-1", "role": "user"}))
        .await
        .expect_error(409, "email_taken");
    for i in 0..25 {
        s.user(&admin, &format!("user{i:02}@rules.test"), json!({})).await;
    }
    let page = admin.get("/api/users?page=2&page_size=10").await.expect_status(200);
    assert_eq!((page["total"].as_i64(), page["page"].as_i64(), page["page_size"].as_i64()), (Some(27), Some(2), Some(10)));
    assert_eq!(page["items"].as_array().map(Vec::len), Some(10));
    let last = admin.get("/api/users?page=3&page_size=10").await.expect_status(200);
    assert_eq!(last["items"].as_array().map(Vec::len), Some(7));
    let default = admin.get("/api/users").await.expect_status(200);
    assert_eq!(default["page_size"], 20);
    admin.get("/api/users?page_size=201").await.expect_error(422, "validation_error");
    admin.get("/api/users?page=0").await.expect_error(422, "validation_error");
    admin.get("/api/users?page=abc").await.expect_error(422, "validation_error");
    for q in ["eloise", "DUPRE", "Éloïse", "loï"] {
        let found = admin.get(&format!("/api/users?q={}", urlencode(q))).await.expect_status(200);
        assert_eq!(found["total"], 1, "q={q}: {found}");
        assert_eq!(found["items"][0]["email"], "eloise@rules.test");
    }
    let none = admin.get("/api/users?q=%25").await.expect_status(200);
    assert_eq!(none["total"], 0, "LIKE wildcards in q are literal");
    admin.get("/api/users/424242").await.expect_error(404, "not_found");
    admin.get("/api/users/not-a-number").await.expect_error(404, "not_found");
}
per_backend!(validation_pagination_and_search);

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn groups_and_permissions(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    let g = admin.post("/api/groups", &json!({"name": "Cardio"})).await.expect_status(201);
    let gid = g["id"].as_i64().expect("id");
    admin.post("/api/groups", &json!({"name": "Cardio"})).await.expect_error(409, "group_exists");
    admin.post("/api/groups", &json!({"name": "   "})).await.expect_error(422, "validation_error");
    let renamed = admin.put(&format!("/api/groups/{gid}"), &json!({"name": "Cardiology"})).await.expect_status(200);
    assert_eq!(renamed["name"], "Cardiology");
    let uid = s.user(&admin, "member@rules.test", json!({"group_id": gid})).await;
    admin.delete(&format!("/api/groups/{gid}")).await.expect_error(409, "group_not_empty");

    // A plain user cannot manage anything, and each refusal is audited.
    let member = s.client();
    member.login("member@rules.test", "user-password-1").await.expect_status(200);
    member.get("/api/users").await.expect_error(403, "forbidden");
    member.post("/api/groups", &json!({"name": "Mine"})).await.expect_error(403, "forbidden");
    member.put(&format!("/api/users/{uid}"), &json!({"role": "admin"})).await.expect_error(403, "forbidden");
    member.get("/api/audit").await.expect_error(403, "forbidden");
    let denied = admin.get(&format!("/api/audit?action=ACCESS_DENIED&user_id={uid}")).await.expect_status(200);
    assert_eq!(denied["total"], 4, "{denied}");
    assert_eq!(denied["items"][0]["details"]["route"], "/api/audit");

    // Leaving group_id out leaves it alone (the user is still in the group).
    let same = admin.put(&format!("/api/users/{uid}"), &json!({"first_name": "M"})).await.expect_status(200);
    assert_eq!((same["group_id"].as_i64(), same["first_name"].as_str()), (Some(gid), Some("M")));
    assert_eq!(admin.get(&format!("/api/users/{uid}")).await.expect_status(200)["group_id"], gid);
    // Taking the user out of the group (explicit null) empties it.
    let out = admin.put(&format!("/api/users/{uid}"), &json!({"group_id": null})).await.expect_status(200);
    assert_eq!(out["group_id"], Value::Null);
    admin.delete(&format!("/api/groups/{gid}")).await.expect_status(204);
    assert_eq!(admin.get("/api/groups").await.expect_status(200)["total"], 0);
}
per_backend!(groups_and_permissions);

async fn cors_for_allowed_origins_only(backend: Backend) {
    let s = serve(backend, |c| c.allowed_origins = vec!["https://app.example.org".into()]).await;
    let c = s.client();
    let ok = c.req(Method::GET, "/api/health").header("origin", "https://app.example.org").send().await;
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example.org"));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let other = c.req(Method::GET, "/api/health").header("origin", "https://evil.example").send().await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    let pre = c
        .req(Method::OPTIONS, "/api/groups")
        .header("origin", "https://app.example.org")
        .header("access-control-request-method", "POST")
        .send()
        .await;
    assert_eq!(pre.status.as_u16(), 204);
    assert!(pre.header("access-control-allow-headers").is_some_and(|h| h.contains("X-CSRF-Token")));
    assert!(pre.header("access-control-allow-methods").is_some_and(|h| h.contains("PUT") && !h.contains("PATCH")));
    // A cross-origin front end listed in AllowedOrigins can log in and write.
    let front = s.client();
    front
        .req(Method::POST, "/api/auth/login")
        .json(&json!({"email": ADMIN, "password": ADMIN_PW}))
        .header("origin", "https://app.example.org")
        .send()
        .await
        .expect_status(200);
    front
        .req(Method::POST, "/api/groups")
        .json(&json!({"name": "X"}))
        .header("origin", "https://app.example.org")
        .send()
        .await
        .expect_status(201);
    front
        .req(Method::POST, "/api/auth/login")
        .json(&json!({"email": ADMIN, "password": ADMIN_PW}))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect_error(403, "origin_not_allowed");
}
per_backend!(cors_for_allowed_origins_only);

/// Every route of DESIGN.md section 3, with its methods.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/health", &["get"]),
    ("/api/openapi.json", &["get"]),
    ("/api/auth/login", &["post"]),
    ("/api/auth/refresh", &["post"]),
    ("/api/auth/logout", &["post"]),
    ("/api/auth/me", &["get"]),
    ("/api/auth/sessions", &["get"]),
    ("/api/auth/sessions/{id}", &["delete"]),
    ("/api/users", &["get", "post"]),
    ("/api/users/{id}", &["get", "put", "delete"]),
    ("/api/users/me/profile", &["put"]),
    ("/api/groups", &["get", "post"]),
    ("/api/groups/{id}", &["put", "delete"]),
    ("/api/audit", &["get"]),
    ("/api/stats", &["get"]),
    ("/api/patients", &["get", "post"]),
    ("/api/patients/statuses", &["get"]),
    ("/api/patients/import", &["post"]),
    ("/api/patients/export", &["post"]),
    ("/api/patients/images/{instance_id}", &["get"]),
    ("/api/patients/{id}", &["get", "put", "delete"]),
    ("/api/patients/{id}/instances", &["get"]),
    ("/api/patients/{id}/export", &["get"]),
];

async fn openapi_lists_every_route(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let doc = s.client().get("/api/openapi.json").await.expect_status(200);
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in ROUTES {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing from the OpenAPI document");
        }
    }
    // And each documented operation is really served (no 404/405 from the router).
    let admin = s.admin().await;
    for (path, item) in paths {
        for method in item.as_object().expect("operations").keys() {
            let concrete = path.replace("{id}", "1").replace("{instance_id}", "1");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = admin.req(m, &concrete).json(&json!({})).send().await;
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let unrouted = r.status == 405 || (r.status == 404 && body["error"]["message"] == "no such route");
            assert!(!unrouted, "{method} {path} is documented but not routed");
        }
    }
}
per_backend!(openapi_lists_every_route);

/// The store closed under a running app (as at shutdown, or a pool that gave up): 503s
/// with a stable code and no internals.
async fn a_closed_store_answers_503_without_internals(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    s.app.store.close().await;
    admin.get("/api/users").await.expect_error(503, "database_unavailable");
    s.client().login(ADMIN, ADMIN_PW).await.expect_error(503, "database_unavailable");
    let health = s.client().get("/api/health").await;
    assert_eq!(health.status.as_u16(), 503);
    assert_eq!(health.json()["database"], "unavailable");
    assert_eq!(health.json()["status"], "degraded");
    assert!(!String::from_utf8_lossy(&health.body).contains("pool"), "5xx bodies do not leak internals");
}
per_backend!(a_closed_store_answers_503_without_internals);

/// A client holding the same cookies as `c` (another tab, or a thief).
fn twin(s: &Served, c: &Client) -> Client {
    let t = s.client();
    for name in ["access_token", "csrf_token"] {
        t.set_cookie("/", name, &c.cookie(name).expect("cookie"));
    }
    t.set_cookie("/api/auth", "refresh_token", &c.refresh_token().expect("refresh cookie"));
    t
}

async fn a_refresh_race_has_one_winner_and_revokes_the_session(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    s.user(&admin, "racer@rules.test", json!({})).await;
    let c = s.client();
    c.login("racer@rules.test", "user-password-1").await.expect_status(200);
    let t = twin(&s, &c);
    // The same refresh token twice at once: one rotation wins, the other is a reuse.
    let (a, b) = tokio::join!(c.req(Method::POST, "/api/auth/refresh").send(), t.req(Method::POST, "/api/auth/refresh").send());
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{} / {}", String::from_utf8_lossy(&a.body), String::from_utf8_lossy(&b.body));
    let (winner, loser) = if a.status == 200 { (&c, &b) } else { (&t, &a) };
    assert_eq!(loser.json()["error"]["code"], "refresh_reused");
    // The reuse revoked the whole session: the winner's fresh tokens are worthless too.
    winner.get("/api/auth/me").await.expect_error(401, "session_revoked");
    winner.req(Method::POST, "/api/auth/refresh").send().await.expect_error(401, "session_revoked");
    let refreshes = admin.get("/api/audit?action=REFRESH").await.expect_status(200);
    let reuses = admin.get("/api/audit?action=REFRESH_REUSE").await.expect_status(200);
    assert_eq!((refreshes["total"].as_i64(), reuses["total"].as_i64()), (Some(1), Some(1)), "{refreshes} {reuses}");
}
per_backend!(a_refresh_race_has_one_winner_and_revokes_the_session);

async fn refresh_needs_an_active_user_and_a_live_session(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    let id = s.user(&admin, "sleeper@rules.test", json!({})).await;
    let c = s.client();
    c.login("sleeper@rules.test", "user-password-1").await.expect_status(200);
    c.req(Method::POST, "/api/auth/refresh").send().await.expect_status(200);

    // Deactivated: the refresh token stops working, and reactivation does not revive it.
    admin.put(&format!("/api/users/{id}"), &json!({"status": "inactive"})).await.expect_status(200);
    c.req(Method::POST, "/api/auth/refresh").send().await.expect_error(401, "session_revoked");
    admin.put(&format!("/api/users/{id}"), &json!({"status": "active"})).await.expect_status(200);
    c.req(Method::POST, "/api/auth/refresh").send().await.expect_error(401, "session_revoked");

    // A session past its expiry cannot be refreshed, even with a refresh token that is
    // still within its own lifetime.
    let d = s.client();
    d.login("sleeper@rules.test", "user-password-1").await.expect_status(200);
    let expired = chrono::Utc::now() - chrono::Duration::minutes(1);
    let sql = "UPDATE user_sessions SET expires_at = $1 WHERE revoked_at IS NULL";
    let changed = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&s.db_url).await.expect("open SQLite");
            sqlx::query(sql).bind(expired).execute(&mut conn).await.expect("expire").rows_affected()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&s.db_url).await.expect("connect");
            sqlx::query(sql).bind(expired).execute(&mut conn).await.expect("expire").rows_affected()
        }
    };
    assert_eq!(changed, 2, "the admin's session and the new one");
    d.req(Method::POST, "/api/auth/refresh").send().await.expect_error(401, "session_revoked");
}
per_backend!(refresh_needs_an_active_user_and_a_live_session);

async fn a_second_node_sees_revocations_within_the_cache_time(backend: Backend) {
    // No JwtSecret: the first node generates one and keeps it in the database.
    let a = serve(backend, |c| c.jwt_secret = None).await;
    let b = serve_on(&a.db_url, |c| c.jwt_secret = None).await;
    let admin = a.admin().await;
    a.user(&admin, "roamer@rules.test", json!({})).await;
    let c = a.client();
    c.login("roamer@rules.test", "user-password-1").await.expect_status(200);
    let token = c.cookie("access_token").expect("access token");
    // The second node verifies the first's tokens (same generated secret) and caches the
    // session.
    let on_b = b.client().with_bearer(&token);
    on_b.get("/api/auth/me").await.expect_status(200);
    c.req(Method::POST, "/api/auth/logout").send().await.expect_status(204);
    a.client().with_bearer(&token).get("/api/auth/me").await.expect_error(401, "session_revoked");
    let revoked = std::time::Instant::now();
    loop {
        let r = on_b.get("/api/auth/me").await;
        if r.status == 401 {
            r.expect_error(401, "session_revoked");
            break;
        }
        assert!(revoked.elapsed() < std::time::Duration::from_millis(3500), "the second node still accepts a revoked session");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The generated secret survives a restart: a node started after both verifies the
    // admin's token.
    let admin_token = admin.cookie("access_token").expect("admin token");
    drop(b);
    let again = serve_on(&a.db_url, |c| c.jwt_secret = None).await;
    again.client().with_bearer(&admin_token).get("/api/auth/me").await.expect_status(200);
}
per_backend!(a_second_node_sees_revocations_within_the_cache_time);

async fn two_admins_demoting_each_other_at_once_leave_one(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let root = s.admin().await;
    let root_id = root.get("/api/auth/me").await.expect_status(200)["id"].as_i64().expect("id");
    let other_id = s.user(&root, "other@rules.test", json!({"role": "admin"})).await;
    let mut conflicts = 0;
    // At least four rounds; more (up to 20) until one ran the two demotions past their
    // admin checks together, which a busy machine's scheduling can keep from happening
    // in four.
    for round in 0..20 {
        if round >= 4 && conflicts > 0 {
            break;
        }
        let other = s.client();
        other.login("other@rules.test", "user-password-1").await.expect_status(200);
        let (path1, path2, demote) = (format!("/api/users/{other_id}"), format!("/api/users/{root_id}"), json!({"role": "user"}));
        let (r1, r2) = tokio::join!(root.put(&path1, &demote), other.put(&path2, &demote));
        let mut outcomes = [r1.status.as_u16(), r2.status.as_u16()];
        outcomes.sort_unstable();
        // One demotion wins. The other meets the last-admin guard (409) when both were
        // past their admin check, or is no longer an admin's (403) when it came after.
        assert!(outcomes == [200, 409] || outcomes == [200, 403], "round {round}: {outcomes:?}");
        for r in [&r1, &r2] {
            match r.status.as_u16() {
                409 => {
                    r.expect_error(409, "last_admin");
                    conflicts += 1;
                }
                403 => {
                    r.expect_error(403, "forbidden");
                }
                _ => {}
            }
        }
        let (admin, demoted_id) = if r1.status == 200 { (&root, other_id) } else { (&other, root_id) };
        let users = admin.get("/api/users?page_size=50").await.expect_status(200);
        let admins = users["items"].as_array().expect("items").iter().filter(|u| u["role"] == "admin").count();
        assert_eq!(admins, 1, "round {round}: {users}");
        admin.put(&format!("/api/users/{demoted_id}"), &json!({"role": "admin"})).await.expect_status(200);
        if r1.status != 200 {
            // The root was demoted and promoted again: its session is still valid.
            root.get("/api/users").await.expect_status(200);
        }
    }
    assert!(conflicts > 0, "no round ran the two demotions concurrently");
}
per_backend!(two_admins_demoting_each_other_at_once_leave_one);

async fn the_audit_trail_is_append_only(backend: Backend) {
    let s = serve(backend, |_| {}).await;
    let admin = s.admin().await;
    let before = admin.get("/api/audit").await.expect_status(200)["total"].as_i64().expect("total");
    assert!(before > 0);
    // Straight to the database, as a careless script or an intruder with SQL would. (Only
    // user_id → NULL passes: what the foreign key does when a user is deleted.)
    for sql in ["UPDATE audit_logs SET action = 'NOTHING'", "DELETE FROM audit_logs", "UPDATE audit_logs SET ip = '10.0.0.1'"] {
        let refused = match backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&s.db_url).await.expect("open SQLite");
                sqlx::query(sql).execute(&mut conn).await.is_err()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&s.db_url).await.expect("connect");
                sqlx::query(sql).execute(&mut conn).await.is_err()
            }
        };
        assert!(refused, "the database accepted {sql}");
    }
    let after = admin.get("/api/audit").await.expect_status(200);
    assert_eq!(after["total"].as_i64(), Some(before), "nothing changed: {after}");
    assert!(after["items"].as_array().expect("items").iter().all(|e| e["action"] != "NOTHING" && e["ip"] != "10.0.0.1"));
}
per_backend!(the_audit_trail_is_append_only);

/// Every page of `path` (which has no `page` or `page_size`) with `page_size` 4, joined:
/// the pages past the middle are read backwards from the end by the server, so they
/// must join up with the ones before them. Returns the patients, every field as the
/// server wrote it, and the totals seen.
async fn all_pages(c: &Client, path: &str) -> (Vec<Value>, Vec<i64>) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (mut patients, mut totals) = (Vec::new(), Vec::new());
    for page in 1.. {
        let v = c.get(&format!("{path}{sep}page={page}&page_size=4")).await.expect_status(200);
        totals.push(v["total"].as_i64().expect("total"));
        let items = v["items"].as_array().expect("items");
        if items.is_empty() {
            break;
        }
        patients.extend(items.iter().cloned());
    }
    (patients, totals)
}

async fn total(c: &Client, path: &str) -> i64 {
    c.get(path).await.expect_status(200)["total"].as_i64().expect("total")
}

/// One list in full (one page of 200), every field of every patient, and its total.
async fn full(c: &Client, path: &str) -> (Vec<Value>, i64) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let v = c.get(&format!("{path}{sep}page_size=200")).await.expect_status(200);
    (v["items"].as_array().expect("items").clone(), v["total"].as_i64().expect("total"))
}

/// Two nodes on one database, an admin signed in on each, and two groups.
struct TwoNodes {
    a: Served,
    b: Served,
    admin_a: Client,
    admin_b: Client,
    g1: i64,
    g2: i64,
}

async fn two_nodes(backend: Backend) -> TwoNodes {
    let a = serve(backend, |_| {}).await;
    let b = serve_on(&a.db_url, |_| {}).await;
    let admin_a = a.admin().await;
    let admin_b = b.admin().await;
    let g1 = admin_a.post("/api/groups", &json!({"name": "Un"})).await.expect_status(201)["id"].as_i64().expect("id");
    let g2 = admin_a.post("/api/groups", &json!({"name": "Deux"})).await.expect_status(201)["id"].as_i64().expect("id");
    TwoNodes { a, b, admin_a, admin_b, g1, g2 }
}

/// List totals come from counters kept by triggers and search results from a cache
/// checked against the registry's generation: both must stay exact across creations,
/// status changes, group moves, renames and deletions, made on this node or another one
/// on the same database, and pages must join up in every sort order.
async fn list_totals_and_cached_searches_stay_exact(backend: Backend) {
    let TwoNodes { a, b: _b, admin_a, admin_b, g1, g2 } = two_nodes(backend).await;
    let statuses = ["to_interpret", "in_progress", "validated", "archived"];
    let mut ids = Vec::new();
    for i in 0..19 {
        let group = match i % 3 {
            0 => Value::Null,
            1 => json!(g1),
            _ => json!(g2),
        };
        // Some without a last name: they sort last in both directions.
        let last_name = if i % 7 == 3 { Value::Null } else { json!(format!("Dupré-{}", (i * 5) % 19)) };
        let body = json!({"external_id": format!("EX-{i:02}"), "last_name": last_name, "first_name": "Zoé", "status": statuses[i % 4], "group_id": group});
        ids.push(admin_a.post("/api/patients", &body).await.expect_status(201)["id"].as_i64().expect("id"));
    }
    a.user(&admin_a, "un@rules.test", json!({"group_id": g1})).await;
    let member = a.client();
    member.login("un@rules.test", "user-password-1").await.expect_status(200);

    // Each list's total is its number of items, and its pages join up, whatever the sort.
    let check = |label: &'static str| {
        let (admin_a, member) = (&admin_a, &member);
        async move {
            let mut paths = vec!["/api/patients".to_string(), "/api/patients?status=validated".into(), "/api/patients?q=dupre".into()];
            for field in ["created_at", "updated_at", "last_name", "external_id", "status"] {
                paths.push(format!("/api/patients?sort={field}"));
                paths.push(format!("/api/patients?sort=-{field}&q=zoe"));
            }
            for (who, c) in [("admin", admin_a), ("member", member)] {
                for path in &paths {
                    let (items, total) = full(c, path).await;
                    assert_eq!(items.len() as i64, total, "{label}: {who} {path}");
                    let (paged, totals) = all_pages(c, path).await;
                    assert_eq!(paged, items, "{label}: {who} {path}, pages of 4");
                    assert!(totals.iter().all(|t| *t == total), "{label}: {who} {path}: {totals:?}");
                }
            }
        }
    };
    check("created").await;
    assert_eq!(total(&admin_a, "/api/patients").await, 19);
    assert_eq!(total(&member, "/api/patients").await, 6);
    assert_eq!(total(&admin_a, "/api/patients?q=dupre").await, 16);
    assert_eq!(total(&member, "/api/patients?q=zoe").await, 6);
    // The last name sort puts the three without one at the end, both ways.
    for (sort, expected) in [("last_name", ["EX-03", "EX-10", "EX-17"]), ("-last_name", ["EX-17", "EX-10", "EX-03"])] {
        let (items, _) = full(&admin_a, &format!("/api/patients?sort={sort}")).await;
        let last: Vec<&str> = items[16..].iter().map(|p| p["external_id"].as_str().expect("external_id")).collect();
        assert_eq!(last, expected, "{sort}");
    }

    // Writes on the other node: a move into the member's group, a rename that makes a
    // patient match a search, a status change, a deletion. The first node's cached
    // searches and counters follow at once.
    let moved = ids[0]; // ungrouped, to_interpret
    admin_b.put(&format!("/api/patients/{moved}"), &json!({"group_id": g1})).await.expect_status(200);
    assert_eq!(total(&member, "/api/patients").await, 7);
    assert_eq!(total(&member, "/api/patients?q=zoe").await, 7);
    assert_eq!(total(&admin_a, "/api/patients?q=zorglub").await, 0);
    admin_b.put(&format!("/api/patients/{}", ids[1]), &json!({"last_name": "Zorglub"})).await.expect_status(200);
    let found = admin_a.get("/api/patients?q=zorglub").await.expect_status(200);
    assert_eq!((found["total"].as_i64(), found["items"][0]["external_id"].as_str()), (Some(1), Some("EX-01")));
    assert_eq!(total(&admin_a, "/api/patients?q=dupre").await, 15);
    assert_eq!(total(&admin_a, "/api/patients?status=validated").await, 5);
    admin_b.put(&format!("/api/patients/{}", ids[3]), &json!({"status": "validated"})).await.expect_status(200);
    assert_eq!(total(&admin_a, "/api/patients?status=validated").await, 6);
    admin_b.req(Method::DELETE, &format!("/api/patients/{}", ids[4])).send().await.expect_status(204);
    assert_eq!(total(&admin_a, "/api/patients").await, 18);
    assert_eq!(total(&member, "/api/patients").await, 6, "EX-04 was the member's");
    // A patient moved out of the member's group leaves their cached search at once.
    assert_eq!(total(&member, "/api/patients?q=zorglub").await, 1);
    admin_b.put(&format!("/api/patients/{}", ids[1]), &json!({"group_id": g2})).await.expect_status(200);
    let gone = member.get("/api/patients?q=zorglub").await.expect_status(200);
    assert_eq!((gone["total"].as_i64(), gone["items"].as_array().map(Vec::len)), (Some(0), Some(0)));
    check("after writes on another node").await;
    // Group deletion still sees the group's patients through the counters.
    admin_a.delete(&format!("/api/groups/{g1}")).await.expect_error(409, "group_not_empty");
}
per_backend!(list_totals_and_cached_searches_stay_exact);

/// One statement run on the database directly, as another program would: rows changed.
async fn run_sql(backend: Backend, db_url: &str, sql: &str) -> u64 {
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(db_url).await.expect("open SQLite");
            sqlx::query(sql).execute(&mut conn).await.expect("statement").rows_affected()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(db_url).await.expect("connect");
            sqlx::query(sql).execute(&mut conn).await.expect("statement").rows_affected()
        }
    }
}

/// A list's answer a node remembers (`page_cache`) is given again only while nothing
/// changed in its scope: a rename on another node (which changes no count), an update
/// made in the database by another program, a move out of a user's group and a
/// deletion each show in the first node's next answer to the very request it answered
/// before, for an admin and for a member of the group.
async fn remembered_list_answers_follow_every_write(backend: Backend) {
    let TwoNodes { a, b: _b, admin_a, admin_b, g1, g2: _ } = two_nodes(backend).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let body = json!({"external_id": format!("RC-{i}"), "last_name": format!("Avant-{i}"), "first_name": "Léa", "group_id": g1});
        ids.push(admin_a.post("/api/patients", &body).await.expect_status(201)["id"].as_i64().expect("id"));
    }
    a.user(&admin_a, "un@rules.test", json!({"group_id": g1})).await;
    let member = a.client();
    member.login("un@rules.test", "user-password-1").await.expect_status(200);
    let paths = [
        "/api/patients?sort=external_id&page_size=4",
        "/api/patients?sort=external_id&page_size=4&page=2",
        "/api/patients?q=avant&sort=external_id",
        "/api/patients?status=to_interpret&sort=external_id",
    ];
    // Each list: (external_id, last_name, first_name) of its items, and its total.
    type Listed = (Vec<(String, String, String)>, i64);
    let lists = |c: &Client| {
        let c = c.clone();
        async move {
            let mut all = Vec::new();
            for path in paths {
                let v = c.get(path).await.expect_status(200);
                let items = v["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|p| (p["external_id"].to_string(), p["last_name"].to_string(), p["first_name"].to_string()))
                    .collect();
                all.push((items, v["total"].as_i64().expect("total")));
            }
            all
        }
    };
    let name_of = |all: &[Listed], external_id: &str| {
        all[0].0.iter().chain(&all[1].0).find(|p| p.0 == format!("\"{external_id}\"")).map(|p| (p.1.clone(), p.2.clone()))
    };
    for c in [&admin_a, &member] {
        let before = lists(c).await;
        assert_eq!(before, lists(c).await, "the same answer twice");
        assert_eq!(before.iter().map(|l| l.1).collect::<Vec<_>>(), [6, 6, 6, 6]);
        assert_eq!(name_of(&before, "RC-0"), Some(("\"Avant-0\"".into(), "\"Léa\"".into())));
    }

    // A rename on the other node: no count changes, the answers do.
    admin_b.put(&format!("/api/patients/{}", ids[0]), &json!({"last_name": "Après"})).await.expect_status(200);
    for c in [&admin_a, &member] {
        let after = lists(c).await;
        assert_eq!(name_of(&after, "RC-0").map(|n| n.0), Some("\"Après\"".into()));
        assert_eq!(after[2].1, 5, "RC-0 no longer matches avant");
    }
    // An update by another program, straight into the database.
    let changed = run_sql(backend, &a.db_url, &format!("UPDATE patients SET first_name = 'Directe' WHERE id = {}", ids[5])).await;
    assert_eq!(changed, 1);
    for c in [&admin_a, &member] {
        assert_eq!(name_of(&lists(c).await, "RC-5").map(|n| n.1), Some("\"Directe\"".into()));
    }
    // A patient moved out of the member's group leaves the member's answers at once, and
    // a deletion leaves everyone's.
    admin_b.put(&format!("/api/patients/{}", ids[1]), &json!({"group_id": Value::Null})).await.expect_status(200);
    let seen = lists(&member).await;
    assert_eq!(name_of(&seen, "RC-1"), None);
    assert_eq!(seen.iter().map(|l| l.1).collect::<Vec<_>>(), [5, 5, 4, 5]);
    admin_b.req(Method::DELETE, &format!("/api/patients/{}", ids[2])).send().await.expect_status(204);
    for (c, totals) in [(&admin_a, [5, 5, 4, 5]), (&member, [4, 4, 3, 4])] {
        let seen = lists(c).await;
        assert_eq!(name_of(&seen, "RC-2"), None);
        assert_eq!(seen.iter().map(|l| l.1).collect::<Vec<_>>(), totals);
    }
}
per_backend!(remembered_list_answers_follow_every_write);

/// Remembered searches patched from the change log so far, on every node of this process.
fn searches_patched() -> u64 {
    cohort_core::metrics::global().searches_patched.load(std::sync::atomic::Ordering::Relaxed)
}

/// A search's pages answered as a node wrote them at an earlier generation, so far.
fn search_pages_kept() -> u64 {
    cohort_core::metrics::global().search_pages_kept.load(std::sync::atomic::Ordering::Relaxed)
}

/// A node remembers a search's matches in a time order with the position of the change
/// log they were read at, and once the generation moves it reads only the patients
/// written since (`search_cache::patched`). After creations, renames in and out of the
/// search, status changes, group moves, deletions and updates by another program, made
/// on another node one at a time or several between two reads, its answers (every page,
/// both directions, a status filter, a group's member) are exactly what a node
/// remembering nothing reads; a page a patch leaves as it was, none of its patients
/// written, is answered as written before (and one of whose patients was written, or
/// that moved, is not). A log pruned past a remembered search (its changes gone, and the
/// rows left naming few patients) makes the node read the search in full.
async fn remembered_searches_are_patched_from_the_change_log(backend: Backend) {
    let TwoNodes { a, b: _b, admin_a, admin_b, g1, g2 } = two_nodes(backend).await;
    let mut ids = Vec::new();
    for i in 0..24 {
        let group = [Value::Null, json!(g1), json!(g2)][i % 3].clone();
        let last_name = if i % 2 == 0 { format!("Martin-{i}") } else { format!("Bernard-{i}") };
        let status = if i % 4 == 3 { "validated" } else { "to_interpret" };
        let body = json!({"external_id": format!("CL-{i:02}"), "last_name": last_name, "status": status, "group_id": group});
        ids.push(admin_a.post("/api/patients", &body).await.expect_status(201)["id"].as_i64().expect("id"));
    }
    a.user(&admin_a, "un@rules.test", json!({"group_id": g1})).await;
    let member = a.client();
    member.login("un@rules.test", "user-password-1").await.expect_status(200);
    let paths = [
        "/api/patients?q=martin",
        "/api/patients?q=martin&sort=updated_at",
        "/api/patients?q=martin&sort=-created_at&status=to_interpret",
        "/api/patients?q=martin&sort=created_at",
    ];
    // What node `a` answers for each path, and what a node started now answers: the
    // answers whole, patients' fields included.
    let answers = |c: Client| async move {
        let mut all = Vec::new();
        let external_ids = |v: &Value| -> Vec<String> {
            v["items"].as_array().expect("items").iter().map(|p| p["external_id"].as_str().expect("external_id").to_string()).collect()
        };
        for path in paths {
            let whole = c.get(&format!("{path}&page_size=200")).await.expect_status(200);
            let total = whole["total"].as_i64().expect("total");
            let items = external_ids(&whole);
            assert_eq!(items.len() as i64, total, "{path}");
            all.push(whole);
            // Pages of 4, up to the first empty one.
            let mut paged = Vec::new();
            for page in 1.. {
                let v = c.get(&format!("{path}&page={page}&page_size=4")).await.expect_status(200);
                assert_eq!(v["total"].as_i64(), Some(total), "{path}: page {page}");
                let ids = external_ids(&v);
                let end = ids.is_empty();
                paged.extend(ids);
                all.push(v);
                if end {
                    break;
                }
            }
            assert_eq!(paged, items, "{path}: pages of 4");
        }
        all
    };
    let check = |label: &'static str| {
        let (a, admin_a, member) = (&a, admin_a.clone(), member.clone());
        async move {
            let fresh = serve_on(&a.db_url, |_| {}).await;
            let fresh_member = fresh.client();
            fresh_member.login("un@rules.test", "user-password-1").await.expect_status(200);
            assert_eq!(answers(admin_a).await, answers(fresh.admin().await).await, "{label}: admin");
            assert_eq!(answers(member).await, answers(fresh_member).await, "{label}: member");
        }
    };
    check("created").await;
    let (patched_before, kept_before) = (searches_patched(), search_pages_kept());
    let put = |id: i64, body: Value| {
        let admin_b = admin_b.clone();
        async move {
            admin_b.put(&format!("/api/patients/{id}"), &body).await.expect_status(200);
        }
    };
    // One write at a time, each read in between.
    let new = json!({"external_id": "CL-NEW", "last_name": "Martinez", "group_id": g1});
    ids.push(admin_b.post("/api/patients", &new).await.expect_status(201)["id"].as_i64().expect("id"));
    check("a match created").await;
    put(ids[0], json!({"last_name": "Durand"})).await;
    check("a match renamed out").await;
    put(ids[1], json!({"last_name": "Martin"})).await;
    check("a patient renamed in").await;
    // In the orders by creation, only the pages holding this patient change.
    put(ids[2], json!({"status": "validated"})).await;
    check("a match's status").await;
    assert!(search_pages_kept() > kept_before, "the pages the write left as they were are answered as written");
    put(ids[2], json!({"first_name": "Zoé"})).await;
    check("a match's first name").await;
    put(ids[4], json!({"group_id": g1})).await;
    check("a match moved into the member's group").await;
    admin_b.req(Method::DELETE, &format!("/api/patients/{}", ids[6])).send().await.expect_status(204);
    check("a match deleted").await;
    // Several writes between two reads, one patient written twice, and an update by
    // another program that moves a match to the front of the update order.
    put(ids[8], json!({"last_name": "Dupont"})).await;
    put(ids[8], json!({"last_name": "Martin-8"})).await;
    put(ids[10], json!({"group_id": Value::Null})).await;
    put(ids[3], json!({"last_name": "Martine"})).await;
    let body = json!({"external_id": "CL-NEW2", "last_name": "Bernard"});
    admin_b.post("/api/patients", &body).await.expect_status(201);
    let sql = format!("UPDATE patients SET updated_at = updated_at + INTERVAL '1 day' WHERE id = {}", ids[12]);
    let sql = match backend {
        Backend::Sqlite => format!("UPDATE patients SET updated_at = '2999-01-01T00:00:00+00:00' WHERE id = {}", ids[12]),
        Backend::Postgres => sql,
    };
    assert_eq!(run_sql(backend, &a.db_url, &sql).await, 1);
    check("several writes").await;
    assert!(searches_patched() >= patched_before + 7, "the node patched its searches");

    // A rename into the search, and the log pruned of it (as the fold does when a
    // transaction that started long before commits: the rows after it in the log can
    // then be few): only the pruned position tells the node to read the search again.
    put(ids[5], json!({"last_name": "Martin-5"})).await;
    let prune_last = match backend {
        Backend::Sqlite => [
            "UPDATE patient_changes_pruned SET seq = (SELECT MAX(seq) FROM patient_changes)",
            "DELETE FROM patient_changes WHERE seq = (SELECT seq FROM patient_changes_pruned)",
        ],
        Backend::Postgres => [
            "UPDATE patient_changes_pruned SET xid = (SELECT xid FROM patient_changes ORDER BY seq DESC LIMIT 1)",
            "DELETE FROM patient_changes WHERE xid = (SELECT xid FROM patient_changes_pruned)",
        ],
    };
    for sql in prune_last {
        assert_eq!(run_sql(backend, &a.db_url, sql).await, 1, "{sql}");
    }
    check("the log pruned of a change").await;

    // The log's own pruning: past 32,768 changes the oldest go and the pruned position
    // moves past them (on PostgreSQL in the counters' fold).
    put(ids[7], json!({"last_name": "Martin-7"})).await;
    let flood = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 40000) \
             INSERT INTO patient_changes (patient_id) SELECT -1 FROM n"
        }
        Backend::Postgres => "INSERT INTO patient_changes (patient_id) SELECT -1 FROM generate_series(1, 40000)",
    };
    assert_eq!(run_sql(backend, &a.db_url, flood).await, 40000);
    if matches!(backend, Backend::Postgres) {
        run_sql(backend, &a.db_url, "SELECT patient_counts_compact()").await;
    }
    let left = run_sql(backend, &a.db_url, "DELETE FROM patient_changes WHERE patient_id <> -1").await;
    assert_eq!(left, 0, "the changes before the flood were pruned");
    let moved = match backend {
        Backend::Sqlite => "UPDATE patient_changes_pruned SET one = one WHERE seq >= (SELECT MIN(seq) FROM patient_changes) - 1",
        Backend::Postgres => {
            "UPDATE patient_changes_pruned SET one = one \
             WHERE xid >= (SELECT xid FROM patient_changes WHERE patient_id = -1 ORDER BY seq LIMIT 1)"
        }
    };
    assert_eq!(run_sql(backend, &a.db_url, moved).await, 1, "the pruned position moved");
    check("the log pruned").await;
}
per_backend!(remembered_searches_are_patched_from_the_change_log);

/// Pages read from a long list's anchors so far, on every node of this process.
fn pages_from_anchors() -> u64 {
    cohort_core::metrics::global().list_pages_from_anchors.load(std::sync::atomic::Ordering::Relaxed)
}

/// A page deep in a long list is read from the nearest remembered sort key before it
/// (`services::anchors`, here every 3 patients): in every order, with and without a
/// status, for an admin and a group's member, with ties on both dates, names missing,
/// first names missing and names differing only by case, before and after writes on
/// another node and in the database, its pages are exactly the ones a node without
/// anchors reads with an offset.
async fn deep_pages_from_anchors_are_the_offset_pages(backend: Backend) {
    let a = serve(backend, |c| c.list_anchor_rows = 3).await;
    let b = serve_on(&a.db_url, |c| c.list_anchor_rows = 1_000_000).await;
    let (admin_a, admin_b) = (a.admin().await, b.admin().await);
    let g1 = admin_a.post("/api/groups", &json!({"name": "Un"})).await.expect_status(201)["id"].as_i64().expect("id");
    let statuses = ["to_interpret", "in_progress", "validated", "archived"];
    let names = ["Martin", "Bernard", "Élise", "martin", "Dubois"];
    let mut ids = Vec::new();
    for i in 0..48 {
        let last_name = if i % 11 == 4 { Value::Null } else { json!(names[i % names.len()]) };
        let first_name = if i % 4 == 1 { Value::Null } else { json!(["Léa", "Jean", "Anne"][i % 3]) };
        let group = if i % 2 == 0 { json!(g1) } else { Value::Null };
        let body = json!({"external_id": format!("DP-{:02}", (i * 7) % 48), "last_name": last_name, "first_name": first_name,
            "status": statuses[i % 4], "group_id": group});
        ids.push(admin_a.post("/api/patients", &body).await.expect_status(201)["id"].as_i64().expect("id"));
    }
    // A bulk import's ties: a third of the patients share both dates.
    let tied = "UPDATE patients SET created_at = (SELECT MIN(created_at) FROM patients), \
                updated_at = (SELECT MIN(updated_at) FROM patients) WHERE id % 3 = 0";
    assert_eq!(run_sql(backend, &a.db_url, tied).await, 16);
    a.user(&admin_a, "un@rules.test", json!({"group_id": g1})).await;
    let (member_a, member_b) = (a.client(), b.client());
    member_a.login("un@rules.test", "user-password-1").await.expect_status(200);
    member_b.login("un@rules.test", "user-password-1").await.expect_status(200);

    let check = |label: &'static str| {
        let (admin_a, admin_b, member_a, member_b) = (&admin_a, &admin_b, &member_a, &member_b);
        async move {
            for field in ["created_at", "updated_at", "last_name", "external_id", "status"] {
                for dir in ["", "-"] {
                    for status in ["", "&status=validated"] {
                        let path = format!("/api/patients?sort={dir}{field}{status}");
                        for (who, on_a, on_b) in [("admin", admin_a, admin_b), ("member", member_a, member_b)] {
                            let (expected, total) = full(on_b, &path).await;
                            assert!(total >= 6, "{label}: {who} {path}: {total}");
                            let (paged, totals) = all_pages(on_a, &path).await;
                            assert_eq!(paged, expected, "{label}: {who} {path}, pages of 4");
                            assert!(totals.iter().all(|t| *t == total), "{label}: {who} {path}: {totals:?}");
                        }
                    }
                }
            }
        }
    };
    let before = pages_from_anchors();
    check("created").await;
    // An admin's list without a status alone: pages 2 to 11 of 12 in each of 10 orders.
    let read = pages_from_anchors() - before;
    assert!(read >= 100, "pages read from anchors: {read}");

    // Writes on the other node (a rename to the head of the name order, a move into the
    // group, a status change, a deletion) and in the database by another program.
    admin_b.put(&format!("/api/patients/{}", ids[7]), &json!({"last_name": "Aaron", "first_name": null})).await.expect_status(200);
    admin_b.put(&format!("/api/patients/{}", ids[9]), &json!({"group_id": g1})).await.expect_status(200);
    admin_b.put(&format!("/api/patients/{}", ids[13]), &json!({"status": "validated"})).await.expect_status(200);
    admin_b.req(Method::DELETE, &format!("/api/patients/{}", ids[20])).send().await.expect_status(204);
    let touched = "UPDATE patients SET updated_at = (SELECT MAX(updated_at) FROM patients) WHERE id % 5 = 0";
    assert!(run_sql(backend, &a.db_url, touched).await >= 9);
    let before = pages_from_anchors();
    check("after writes").await;
    assert!(pages_from_anchors() > before, "the anchors were read again after the writes");

    // A write between the counts a request read and its page: the anchors of the
    // counts' generation are not used, as the page's own statement reads the counts.
    use cohort_core::services::anchors::deep_page;
    use cohort_core::store::patients::{PatientFilter, PatientSort, Scope};
    let filter =
        PatientFilter { scope: Scope::All, search: None, pseudonym: None, status: None, sort: PatientSort::UpdatedAt { desc: true } };
    let page = cohort_core::store::PageRequest { page: 5, page_size: 4 };
    let mut db = a.app.store.conn().await.expect("connection");
    let counts = db.patient_counts(Scope::All).await.expect("counts");
    let (db, found) = deep_page(&a.app, db, &filter, page, &counts).await.expect("page");
    assert_eq!(found.map(|(_, rows)| rows.len()), Some(4), "from the anchors of this generation");
    assert_eq!(run_sql(backend, &a.db_url, &format!("UPDATE patients SET status = status WHERE id = {}", ids[0])).await, 1);
    let (mut db, found) = deep_page(&a.app, db, &filter, page, &counts).await.expect("page");
    assert!(found.is_none(), "a write came after the counts");

    // Before the counts are read, from the anchors the node knows: their statement gives
    // the counts of the moment, with the page only while no write came since the anchors.
    use cohort_core::services::anchors::known_deep_page;
    let stale = known_deep_page(&a.app, &mut db, &filter, page).await.expect("page").expect("anchors are known");
    let now = db.patient_counts(Scope::All).await.expect("counts");
    assert_eq!((stale.0.generation, stale.0.total(None)), (now.generation, now.total(None)), "the counts of the moment");
    assert!(stale.1.is_none(), "anchors of an earlier generation give no page");
    let (mut db, found) = deep_page(&a.app, db, &filter, page, &now).await.expect("page");
    let (_, rows) = found.expect("the anchors read again for this generation");
    let (counts, again) = known_deep_page(&a.app, &mut db, &filter, page).await.expect("page").expect("anchors are known");
    assert_eq!(counts.generation, now.generation);
    let ids_of = |rows: &[cohort_core::store::patients::PatientRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(again.as_deref().map(ids_of), Some(ids_of(&rows)), "the same page, from the anchors of this generation");
    let shallow = cohort_core::store::PageRequest { page: 1, page_size: 4 };
    assert!(known_deep_page(&a.app, &mut db, &filter, shallow).await.expect("page").is_none(), "the first page is not deep");
}
per_backend!(deep_pages_from_anchors_are_the_offset_pages);

/// PostgreSQL breaks a deadlock by failing one of its transactions (SQLSTATE 40P01), as
/// it did between an import's closing transaction and the change follower refreshing
/// the same studies: a registration transaction so chosen is run again by
/// `registry::retrying`, and both land. Two transactions take two rows in opposite
/// orders, each waiting for the other after its first row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_chosen_to_break_a_deadlock_runs_again() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    if cohort_e2e::postgres_skipped() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    sqlx::query("CREATE TABLE probe (id int PRIMARY KEY, v int NOT NULL)").execute(&pool).await.expect("create");
    sqlx::query("INSERT INTO probe VALUES (1, 0), (2, 0)").execute(&pool).await.expect("insert");
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let tries = Arc::new(AtomicU32::new(0));
    let run = |first: i32, second: i32| {
        let (pool, barrier, tries) = (pool.clone(), barrier.clone(), tries.clone());
        tokio::spawn(async move {
            let attempts = AtomicU32::new(0);
            let (pool, barrier, attempts) = (&pool, &barrier, &attempts);
            let tries = &tries;
            cohort_core::services::registry::retrying(move || async move {
                tries.fetch_add(1, Ordering::SeqCst);
                let mut tx = pool.begin().await?;
                sqlx::query("UPDATE probe SET v = v + 1 WHERE id = $1").bind(first).execute(&mut *tx).await?;
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    barrier.wait().await;
                }
                sqlx::query("UPDATE probe SET v = v + 1 WHERE id = $1").bind(second).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            })
            .await
        })
    };
    let (a, b) = (run(1, 2), run(2, 1));
    a.await.expect("task").expect("the first transaction lands");
    b.await.expect("task").expect("the second transaction lands");
    assert_eq!(tries.load(Ordering::SeqCst), 3, "one of the two was chosen to break the deadlock, then ran again");
    let sum: i64 = sqlx::query_scalar("SELECT sum(v) FROM probe").fetch_one(&pool).await.expect("sum");
    assert_eq!(sum, 4, "both transactions applied, each once");
}

/// The counters take concurrent writers without a row they all wait on (migration 0009:
/// the triggers append deltas, folded every 256 into the counters): creations, status
/// changes, group moves and deletions from eight clients on two nodes at once, with
/// searches cached in between, leave every total exact, and a search made afterwards
/// sees the final registry.
async fn counters_stay_exact_under_concurrent_writers(backend: Backend) {
    let TwoNodes { a, b, admin_a, admin_b, g1, g2 } = two_nodes(backend).await;
    let groups = [None, Some(g1), Some(g2)];
    let statuses = ["to_interpret", "in_progress", "validated", "archived"];
    // Each worker owns its patients and knows where they end: (group, status) per id.
    let worker = |w: usize| {
        let c = if w % 2 == 0 { admin_a.clone() } else { admin_b.clone() };
        async move {
            let mut mine: Vec<(i64, Option<i64>, &str)> = Vec::new();
            for i in 0..50 {
                let (group, status) = (groups[(w + i) % 3], statuses[(w * 7 + i) % 4]);
                let body = json!({"external_id": format!("W{w}-{i:02}"), "last_name": "Concurrent", "status": status, "group_id": group});
                let id = c.post("/api/patients", &body).await.expect_status(201)["id"].as_i64().expect("id");
                mine.push((id, group, status));
                if i % 3 == 2 {
                    let k = mine.len() - 2;
                    let status = statuses[(i / 3) % 4];
                    c.put(&format!("/api/patients/{}", mine[k].0), &json!({"status": status})).await.expect_status(200);
                    mine[k].2 = status;
                }
                if i % 7 == 6 {
                    let k = mine.len() - 3;
                    let group = groups[(w + i + 1) % 3];
                    c.put(&format!("/api/patients/{}", mine[k].0), &json!({"group_id": group})).await.expect_status(200);
                    mine[k].1 = group;
                }
                if i % 5 == 4 {
                    let (id, _, _) = mine.remove(i % mine.len());
                    c.req(Method::DELETE, &format!("/api/patients/{id}")).send().await.expect_status(204);
                }
                if i % 10 == 0 {
                    // A search cached while others write.
                    c.get("/api/patients?q=concurrent&status=validated").await.expect_status(200);
                }
                if i % 4 == 1 {
                    // Searches in a time order, patched while others write.
                    c.get("/api/patients?q=concurrent").await.expect_status(200);
                    c.get("/api/patients?q=concurrent&sort=created_at&status=in_progress").await.expect_status(200);
                }
            }
            mine
        }
    };
    let finals = futures_util::future::join_all((0..8).map(worker)).await.concat();

    let count = |group: Option<Option<i64>>, status: Option<&str>| {
        finals.iter().filter(|(_, g, s)| group.is_none_or(|group| *g == group) && status.is_none_or(|status| *s == status)).count() as i64
    };
    a.user(&admin_a, "un@rules.test", json!({"group_id": g1})).await;
    let member = b.client();
    member.login("un@rules.test", "user-password-1").await.expect_status(200);
    for (node, admin) in [("a", &admin_a), ("b", &admin_b)] {
        assert_eq!(total(admin, "/api/patients").await, count(None, None), "{node}");
        assert_eq!(total(admin, "/api/patients?q=concurrent").await, count(None, None), "{node}");
        for status in statuses {
            assert_eq!(total(admin, &format!("/api/patients?status={status}")).await, count(None, Some(status)), "{node} {status}");
        }
        assert_eq!(total(admin, "/api/patients?q=concurrent&status=validated").await, count(None, Some("validated")), "{node}");
    }
    assert_eq!(total(&member, "/api/patients").await, count(Some(Some(g1)), None));
    for status in statuses {
        let path = format!("/api/patients?q=concurrent&status={status}");
        assert_eq!(total(&member, &path).await, count(Some(Some(g1)), Some(status)), "member {status}");
    }
    let stats = member.get("/api/stats").await.expect_status(200);
    assert_eq!(stats["patients"]["total"].as_i64(), Some(count(Some(Some(g1)), None)), "{stats}");
    // The searches the nodes patched while the writers ran (transactions committing in
    // any order on PostgreSQL) list what a node remembering nothing lists, in order.
    let fresh = serve_on(&a.db_url, |_| {}).await;
    let fresh_admin = fresh.admin().await;
    let listed = |c: Client, path: &'static str| async move {
        let mut ids = Vec::new();
        for page in 1.. {
            let v = c.get(&format!("{path}&page_size=100&page={page}")).await.expect_status(200);
            let items = v["items"].as_array().expect("items");
            if items.is_empty() {
                break;
            }
            ids.extend(items.iter().map(|p| p["id"].as_i64().expect("id")));
        }
        ids
    };
    for path in ["/api/patients?q=concurrent", "/api/patients?q=concurrent&sort=created_at&status=in_progress"] {
        let want = listed(fresh_admin.clone(), path).await;
        assert_eq!(want.len() as i64, total(&fresh_admin, path).await, "{path}");
        assert_eq!(listed(admin_a.clone(), path).await, want, "node a: {path}");
        assert_eq!(listed(admin_b.clone(), path).await, want, "node b: {path}");
    }

    // The deltas were folded along the way (more than 256 were appended).
    let sql = "SELECT COUNT(*) FROM patient_count_deltas";
    let left: i64 = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&a.db_url).await.expect("open SQLite");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("deltas")
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&a.db_url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("deltas")
        }
    };
    assert!(left < 256, "{left} deltas left unfolded");
}
per_backend!(counters_stay_exact_under_concurrent_writers);
