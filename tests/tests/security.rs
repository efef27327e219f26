//! The security model against each deployment: CSRF on cookie-authenticated writes,
//! Origin checks, token forgery of every kind, Bearer clients, CORS, and error shapes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cohort_e2e::{per_deployment, Backend, Deployment, Host, JWT_SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

/// The claims of the access token in a client's jar.
fn access_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

fn sign(claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

async fn csrf_and_tokens(d: Deployment) {
    let admin = d.admin().await;

    // Cookie-authenticated writes need the CSRF header, and the right one.
    admin.req(Method::POST, "/api/groups").json(&json!({"name": "g1"})).without_csrf().send().await.expect_error(403, "csrf_failed");
    admin
        .req(Method::POST, "/api/groups")
        .json(&json!({"name": "g1"}))
        .without_csrf()
        .header("x-csrf-token", "guessed-token")
        .send()
        .await
        .expect_error(403, "csrf_failed");
    admin
        .req(Method::PUT, "/api/users/me/profile")
        .json(&json!({"first_name": "X"}))
        .without_csrf()
        .send()
        .await
        .expect_error(403, "csrf_failed");
    admin.req(Method::POST, "/api/auth/logout").without_csrf().send().await.expect_error(403, "csrf_failed");
    admin.req(Method::POST, "/api/auth/refresh").without_csrf().send().await.expect_error(403, "csrf_failed");
    admin.get("/api/auth/me").await.expect_status(200);
    let groups = admin.get("/api/groups").await.expect_status(200);
    assert_eq!(groups["total"], 0, "nothing was created by the refused requests");

    // A present Origin must be allowed; the same host is.
    admin
        .req(Method::POST, "/api/groups")
        .json(&json!({"name": "g1"}))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect_error(403, "origin_not_allowed");
    let same_origin = d.url.clone();
    admin.req(Method::POST, "/api/groups").json(&json!({"name": "g1"})).header("origin", &same_origin).send().await.expect_status(201);

    // Bearer clients do not need CSRF.
    let token = admin.cookie("access_token").expect("access cookie");
    let bearer = d.client();
    let me = bearer.req(Method::GET, "/api/auth/me").bearer(&token).send().await.expect_status(200);
    assert_eq!(me["role"], "admin");
    bearer.req(Method::POST, "/api/groups").json(&json!({"name": "g2"})).bearer(&token).send().await.expect_status(201);

    // Forged, expired, unsigned and wrongly typed tokens are refused.
    let claims = access_claims(&token);
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 3600);
    expired["exp"] = json!(now - 1800);
    let mut as_refresh = claims.clone();
    as_refresh["typ"] = json!("refresh");
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = json!("someone-else");
    let mut other_user = claims.clone();
    other_user["sub"] = json!("999");
    let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#), token.split('.').nth(1).unwrap_or_default());
    let tampered = {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut c = claims.clone();
        c["sub"] = json!("2");
        parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
        parts.join(".")
    };
    let cases = [
        ("forged with another key", sign(&claims, b"not-the-server-secret-not-the-server-secret", Algorithm::HS256), "invalid_token"),
        ("expired", sign(&expired, JWT_SECRET.as_bytes(), Algorithm::HS256), "token_expired"),
        ("alg none", unsigned, "invalid_token"),
        ("HS512", sign(&claims, JWT_SECRET.as_bytes(), Algorithm::HS512), "invalid_token"),
        ("refresh typ", sign(&as_refresh, JWT_SECRET.as_bytes(), Algorithm::HS256), "invalid_token"),
        ("other issuer", sign(&other_issuer, JWT_SECRET.as_bytes(), Algorithm::HS256), "invalid_token"),
        ("other user, same session", sign(&other_user, JWT_SECRET.as_bytes(), Algorithm::HS256), "session_revoked"),
        ("tampered payload", tampered, "invalid_token"),
        ("garbage", "not.a.jwt".to_string(), "invalid_token"),
    ];
    for (what, bad, code) in cases {
        let r = d.client().req(Method::GET, "/api/auth/me").bearer(&bad).send().await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"]["code"], code, "{what}");
        assert!(r.header("www-authenticate").is_none(), "{what}: no Basic-auth challenge");
    }
    // The access token is not a refresh token either.
    let c = d.client();
    c.set_cookie("/api/auth", "refresh_token", &token);
    c.req(Method::POST, "/api/auth/refresh").without_csrf().send().await.expect_error(401, "invalid_token");

    // Unauthenticated and unknown routes answer JSON errors.
    d.client().get("/api/auth/me").await.expect_error(401, "not_authenticated");
    d.client().get("/api/users").await.expect_error(401, "not_authenticated");
    d.client().get("/api/no-such-route").await.expect_error(404, "not_found");
    let r = d.client().post("/api/auth/login", &json!({"email": "x@y.org"})).await;
    let err = r.expect_error(422, "validation_error");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.starts_with("password")), "{err}");
    d.client().req(Method::POST, "/api/auth/login").body("application/json", "{not json").send().await.expect_error(400, "invalid_json");
    d.client().req(Method::POST, "/api/auth/login").body("application/json", "").send().await.expect_error(400, "empty_body");
    d.client()
        .req(Method::POST, "/api/auth/login")
        .body("text/plain", r#"{"email":"a@b.org","password":"x"}"#)
        .send()
        .await
        .expect_error(415, "unsupported_media_type");

    // Health and OpenAPI need no session.
    let health = d.client().get("/api/health").await.expect_status(200);
    assert_eq!(health, json!({"status": "ok", "database": "ok", "orthanc": "ok"}));
    let doc = d.client().get("/api/openapi.json").await.expect_status(200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
}
per_deployment!(csrf_and_tokens);

/// CORS on the real binaries: only listed origins get `Access-Control-Allow-Origin`,
/// every answer says `Vary: Origin` (a shared cache must not hand one origin's answer to
/// another), and an unlisted origin cannot write with the browser's cookies.
async fn cors_on_the_real_binary(host: Host) {
    let settings = [("AllowedOrigins".to_string(), json!(["https://app.example.org"]))].into_iter().collect();
    let d = Deployment::start_with(host, Backend::Sqlite, settings).await;
    let c = d.client();
    for origin in [Some("https://app.example.org"), Some("https://evil.example"), None] {
        let mut req = c.req(Method::GET, "/api/health");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await;
        assert_eq!(r.status.as_u16(), 200, "{origin:?}");
        let allowed = origin.filter(|o| *o == "https://app.example.org");
        assert_eq!(r.header("access-control-allow-origin"), allowed, "{origin:?}");
        assert_eq!(r.header("access-control-allow-credentials"), allowed.map(|_| "true"), "{origin:?}");
        let vary: Vec<&str> = r.headers.get_all("vary").iter().filter_map(|v| v.to_str().ok()).collect();
        assert!(vary.iter().any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("origin"))), "{origin:?}: Vary {vary:?}");
    }
    let admin = d.admin().await;
    admin
        .req(Method::POST, "/api/groups")
        .json(&json!({"name": "from-app"}))
        .header("origin", "https://app.example.org")
        .send()
        .await
        .expect_status(201);
    admin
        .req(Method::POST, "/api/groups")
        .json(&json!({"name": "from-evil"}))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect_error(403, "origin_not_allowed");
    assert_eq!(admin.get("/api/groups").await.expect_status(200)["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_on_the_sidecar() {
    cors_on_the_real_binary(Host::Sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_on_the_plugin() {
    cors_on_the_real_binary(Host::Plugin).await;
}
