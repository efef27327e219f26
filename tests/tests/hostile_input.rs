//! Hostile input against each deployment (DESIGN.md §6 "Input rules", "Throttling under
//! concurrency", "Client address", "Sessions and CSRF for front ends"): every attack
//! here succeeded once, and each assertion fails on the code that let it through.

use std::collections::BTreeMap;

use cohort_e2e::{Client, Deployment, Host, ADMIN_EMAIL, ADMIN_PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

const FRONT_END: &str = "https://front.example";

/// A deployment whose `AllowedOrigins` lists a cross-origin front end.
async fn start(host: Host, backend: cohort_e2e::Backend) -> Deployment {
    let settings = BTreeMap::from([("AllowedOrigins".to_string(), json!([FRONT_END]))]);
    Deployment::start_with(host, backend, settings).await
}

/// How many audit rows of `action` there are.
async fn audit_count(admin: &Client, action: &str) -> i64 {
    admin.get(&format!("/api/audit?action={action}&page_size=1")).await.expect_status(200)["total"].as_i64().expect("total")
}

#[track_caller]
fn assert_names(err: &Value, field: &str) {
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(field), "the message should name {field:?}: {err}");
}

/// Unknown fields and parameters are refused, never silently dropped.
async fn unknown_input_is_refused(d: &Deployment, admin: &Client) {
    // The misspelt password change answered 200 and changed nothing.
    let r = admin.put("/api/users/me/profile", &json!({"password": "a-new-password-1", "current_password": ADMIN_PASSWORD})).await;
    assert_names(&r.expect_error(422, "validation_error"), "password");
    d.client().login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
    let r = admin.post("/api/groups", &json!({"name": "g", "colour": "red"})).await;
    assert_names(&r.expect_error(422, "validation_error"), "colour");
    let r = admin.post("/api/auth/login", &json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "remember": true})).await;
    assert_names(&r.expect_error(422, "validation_error"), "remember");

    // Query parameters the route does not declare; `_` (cache busting) is allowed.
    assert_names(&admin.get("/api/patients?pagesize=5").await.expect_error(422, "validation_error"), "pagesize");
    assert_names(&admin.get("/api/auth/me?debug=1").await.expect_error(422, "validation_error"), "debug");
    assert_names(&admin.get("/api/users?page=1&role=admin").await.expect_error(422, "validation_error"), "role");
    admin.get("/api/patients?_=1733100000000&page=1").await.expect_status(200);
    admin.get("/api/auth/me?_=1").await.expect_status(200);
    admin.get("/api/tokens?_=1&page=1").await.expect_status(200);
    assert_names(&admin.get("/api/tokens?user=1").await.expect_error(422, "validation_error"), "user");
}

/// A NUL byte anywhere is a 422, never a 5xx.
async fn nul_bytes_are_refused(d: &Deployment, admin: &Client) {
    assert_names(&admin.get("/api/patients?q=%00").await.expect_error(422, "validation_error"), "q");
    assert_names(&admin.get("/api/users?q=ab%00cd").await.expect_error(422, "validation_error"), "q");
    assert_names(&admin.get("/api/audit?action=LOG%00IN").await.expect_error(422, "validation_error"), "action");
    let r = admin.post("/api/groups", &json!({"name": "a\u{0}b"})).await;
    assert_names(&r.expect_error(422, "validation_error"), "name");
    let r = d.client().post("/api/auth/login", &json!({"email": "a\u{0}@x.org", "password": "whatever-password"})).await;
    assert_names(&r.expect_error(422, "validation_error"), "email");
    let r = admin.post("/api/patients", &json!({"external_id": "P\u{0}1"})).await;
    assert_names(&r.expect_error(422, "validation_error"), "external_id");
    // In a path: the sidecar answers 422; Orthanc decodes the URI first and may refuse
    // it itself (404). Never a 5xx.
    for path in ["/api/auth/sessions/%00", "/api/patients/images/abc%00def"] {
        let r = admin.req(Method::GET, path).send().await;
        match d.host {
            Host::Sidecar => {
                r.expect_error(422, "validation_error");
            }
            Host::Plugin => assert!(!r.status.is_server_error(), "{path}: {}", r.status),
        }
        let r = admin.delete(path).await;
        assert!(!r.status.is_server_error(), "DELETE {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        if d.host == Host::Sidecar {
            r.expect_error(422, "validation_error");
        }
    }
}

/// Lengths are checked before any work.
async fn lengths_are_bounded(d: &Deployment, admin: &Client) {
    admin.get(&format!("/api/patients?q={}", "é".repeat(100))).await.expect_status(200);
    assert_names(&admin.get(&format!("/api/patients?q={}", "a".repeat(101))).await.expect_error(422, "validation_error"), "q");
    assert_names(&admin.get(&format!("/api/users?q={}", "a".repeat(101))).await.expect_error(422, "validation_error"), "q");
    assert_names(&admin.post("/api/groups", &json!({"name": "n".repeat(101)})).await.expect_error(422, "validation_error"), "name");
    admin.post("/api/groups", &json!({"name": "n".repeat(100)})).await.expect_status(201);

    // An oversized login email is refused before any work: no hash, no audit row.
    let failed_before = audit_count(admin, "LOGIN_FAILED").await;
    let long = format!("{}@example.org", "a".repeat(300));
    let r = d.client().post("/api/auth/login", &json!({"email": long, "password": "some-password-1"})).await;
    assert_names(&r.expect_error(422, "validation_error"), "email");
    let r = d.client().post("/api/auth/login", &json!({"email": "a@example.org", "password": "p".repeat(73)})).await;
    assert_names(&r.expect_error(422, "validation_error"), "password");
    let huge = format!("{}@example.org", "a".repeat(2 << 20));
    let r = d.client().post("/api/auth/login", &json!({"email": huge, "password": "some-password-1"})).await;
    // (The plugin's filter refuses a body declared over 1 MiB before Orthanc reads it,
    // with the only answer a filter has: 403.)
    let refused: &[u16] = if d.host == Host::Plugin { &[403, 413, 422] } else { &[413, 422] };
    assert!(refused.contains(&r.status.as_u16()), "a 2 MiB email: {}", r.status);
    assert_eq!(audit_count(admin, "LOGIN_FAILED").await, failed_before, "oversized logins leave no audit row");

    // Pages: huge numbers are bounded or refused, never a 5xx.
    let page = admin.get("/api/patients?page=4294967295&page_size=200").await.expect_status(200);
    assert_eq!(page["items"], json!([]));
    admin.get("/api/users?page=4294967295").await.expect_status(200);
    admin.get("/api/audit?page=4294967295&page_size=200").await.expect_status(200);
    for bad in ["page=0", "page=-1", "page=99999999999999999999", "page_size=201", "page_size=100000", "page=1e3"] {
        admin.get(&format!("/api/patients?{bad}")).await.expect_error(422, "validation_error");
    }
}

/// A password accepted when set always works at login, 72 bytes included (bcrypt
/// appends a NUL: a 72-byte password used to fail at every login).
async fn longest_passwords_work(d: &Deployment, admin: &Client) {
    let longest = "é".repeat(36);
    assert_eq!(longest.len(), 72);
    admin.post("/api/users", &json!({"email": "long@hostile.test", "password": longest, "role": "user"})).await.expect_status(201);
    let user = d.client();
    user.login("long@hostile.test", &longest).await.expect_status(200);
    d.client().login("long@hostile.test", &"é".repeat(35)).await.expect_error(401, "invalid_credentials");

    let other = format!("{}!", "x".repeat(71));
    user.put("/api/users/me/profile", &json!({"new_password": other, "current_password": longest})).await.expect_status(200);
    d.client().login("long@hostile.test", &other).await.expect_status(200);
    user.put("/api/users/me/profile", &json!({"new_password": "y".repeat(73), "current_password": other}))
        .await
        .expect_error(422, "validation_error");
}

/// Deeply nested JSON is a 400, not a crash.
async fn nested_json_is_refused(admin: &Client) {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    admin.req(Method::POST, "/api/groups").body("application/json", deep).send().await.expect_error(400, "invalid_json");
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(5000), "}".repeat(5000));
    admin.req(Method::POST, "/api/patients/export").body("application/json", deep_object).send().await.expect_error(400, "invalid_json");
}

/// A front end can recover its CSRF token, and read the headers it needs cross-origin.
async fn front_end_support(d: &Deployment, admin: &Client) {
    let me = admin.get("/api/auth/me").await.expect_status(200);
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["csrf_token"].as_str(), admin.cookie("csrf_token").as_deref(), "{me}");
    let token = admin.cookie("access_token").expect("access cookie");
    let bearer = d.client().req(Method::GET, "/api/auth/me").bearer(&token).send().await.expect_status(200);
    assert!(bearer.get("csrf_token").is_none(), "Bearer callers have no CSRF token: {bearer}");
    // A tossed csrf_token cookie is not echoed as the session's.
    let tossed = d.client();
    tossed.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
    tossed.set_cookie("/", "csrf_token", "attacker-chosen");
    let me = tossed.get("/api/auth/me").await.expect_status(200);
    assert!(me.get("csrf_token").is_none_or(|t| t != "attacker-chosen"), "{me}");

    let r = admin.req(Method::GET, "/api/auth/me").header("origin", FRONT_END).send().await;
    r.expect_status(200);
    assert_eq!(r.header("access-control-allow-origin"), Some(FRONT_END));
    let exposed = r.header("access-control-expose-headers").unwrap_or_default().to_ascii_lowercase();
    for h in ["content-disposition", "retry-after", "x-request-id"] {
        assert!(exposed.contains(h), "{h} is not exposed: {exposed:?}");
    }
}

/// Without `TrustedProxies`, `X-Forwarded-For` is anyone's word and is ignored.
async fn forwarded_for_is_ignored_by_default(d: &Deployment, admin: &Client) {
    let c = d.client();
    let r = c
        .req(Method::POST, "/api/auth/login")
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .header("x-forwarded-for", "198.51.100.99")
        .send()
        .await;
    r.expect_status(200);
    let sessions = admin.get("/api/auth/sessions").await.expect_status(200);
    let ips: Vec<&str> = sessions.as_array().expect("sessions").iter().filter_map(|s| s["ip"].as_str()).collect();
    assert!(!ips.contains(&"198.51.100.99") && ips.contains(&"127.0.0.1"), "{ips:?}");
}

/// `cohort_http_requests_total` of the image route with `status`.
async fn image_requests(admin: &Client, status: u16) -> f64 {
    let series = format!("cohort_http_requests_total{{route=\"/api/patients/images/{{instance_id}}\",status=\"{status}\"}}");
    cohort_e2e::sample(&cohort_e2e::metrics_text(admin).await, &series).unwrap_or(0.0)
}

/// The raw image route is served past the router when its request is plain (`GET`, an
/// id, no query), and through the router otherwise (`?_=…`, which every route accepts):
/// both ways give the same answer, whoever asks and however (session, token, none,
/// forged, another group's user, a cross-origin front end, a method override, a request
/// id), and both are counted under the route's name.
async fn image_lane_answers_as_the_router(d: &Deployment, admin: &Client) {
    let files = cohort_e2e::dicom::study(&cohort_e2e::dicom::StudySpec::new("IPP-LANE").studies(1).series(1).instances(1).seed(71));
    let zip = cohort_e2e::dicom::zip(&files.paths(), cohort_e2e::dicom::ZipOptions::default());
    admin.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200);
    let patients = admin.get("/api/patients?q=IPP-LANE").await.expect_status(200);
    let patient = patients["items"][0]["id"].as_i64().expect("the imported patient");
    let instances = admin.get(&format!("/api/patients/{patient}/instances")).await.expect_status(200);
    let id = instances[0]["id"].as_str().expect("an instance").to_string();

    let g = admin.post("/api/groups", &json!({"name": "Lane elsewhere"})).await.expect_status(201)["id"].clone();
    let user = json!({"email": "lane@e2e.test", "password": "user-password-1", "role": "user", "group_id": g});
    admin.post("/api/users", &user).await.expect_status(201);
    let elsewhere = d.client();
    elsewhere.login("lane@e2e.test", "user-password-1").await.expect_status(200);
    let body = json!({"name": "lane", "scope": "read", "expires_in_days": 1, "current_password": ADMIN_PASSWORD});
    let token = admin.post("/api/users/me/tokens", &body).await.expect_status(201)["token"].as_str().expect("token").to_string();
    let bearer = format!("Bearer {token}");
    let anonymous = d.client();

    let unknown = "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd";
    // (what, who asks, which instance, with which headers, the status expected; 0: any 4xx)
    type Case<'a> = (&'a str, &'a Client, String, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("admin session", admin, id.clone(), vec![], 200),
        ("read-scope API token", &anonymous, id.clone(), vec![("authorization", bearer.as_str())], 200),
        ("cross-origin front end", admin, id.clone(), vec![("origin", FRONT_END)], 200),
        ("another origin", admin, id.clone(), vec![("origin", "https://evil.example")], 200),
        ("the caller's request id", admin, id.clone(), vec![("x-request-id", "lane-check-1")], 200),
        ("no session", &anonymous, id.clone(), vec![], 401),
        ("forged token", &anonymous, id.clone(), vec![("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.forged")], 401),
        ("another group's user", &elsewhere, id.clone(), vec![], 404),
        ("an unknown instance", admin, unknown.to_string(), vec![], 404),
        ("a method override", admin, id.clone(), vec![("x-http-method-override", "DELETE")], 0),
    ];
    let compared = [
        "content-type",
        "content-length",
        "cache-control",
        "vary",
        "x-content-type-options",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ];
    let (ok_before, refused_before) = (image_requests(admin, 200).await, image_requests(admin, 404).await);
    for (case, client, instance, headers, status) in &cases {
        let mut answers = Vec::new();
        for path in [format!("/api/patients/images/{instance}"), format!("/api/patients/images/{instance}?_=1")] {
            let mut req = client.req(Method::GET, &path);
            for (name, value) in headers {
                req = req.header(name, value);
            }
            answers.push(req.send().await);
        }
        let (lane, router) = (&answers[0], &answers[1]);
        assert_eq!(lane.status, router.status, "{case}");
        if *status != 0 {
            assert_eq!(lane.status.as_u16(), *status, "{case}");
        } else {
            assert!(lane.status.is_client_error(), "{case}: {}", lane.status);
        }
        assert!(lane.body == router.body, "{case}: the answers' bodies differ");
        for h in compared {
            assert_eq!(lane.header(h), router.header(h), "{case}: {h}");
        }
        let id_sent = headers.iter().find(|(n, _)| *n == "x-request-id").map(|(_, v)| *v);
        assert!(lane.header("x-request-id").is_some_and(|v| id_sent.is_none_or(|s| s == v)), "{case}: {:?}", lane.header("x-request-id"));
    }
    assert_eq!(admin.get(&format!("/api/patients/images/{id}?_=1")).await.header("content-type"), Some("application/dicom"));
    // Both ways are counted under the route's own name: 5 answers of 200 and 2 of 404, twice, and the one just above.
    assert_eq!(image_requests(admin, 200).await - ok_before, 11.0);
    assert_eq!(image_requests(admin, 404).await - refused_before, 4.0);
}

async fn input_rules(d: Deployment) {
    let admin = d.admin().await;
    forwarded_for_is_ignored_by_default(&d, &admin).await;
    unknown_input_is_refused(&d, &admin).await;
    nul_bytes_are_refused(&d, &admin).await;
    lengths_are_bounded(&d, &admin).await;
    longest_passwords_work(&d, &admin).await;
    nested_json_is_refused(&admin).await;
    front_end_support(&d, &admin).await;
    image_lane_answers_as_the_router(&d, &admin).await;
}

mod input_rules {
    use cohort_e2e::{Backend, Host};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_sqlite() {
        super::input_rules(super::start(Host::Sidecar, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::input_rules(super::start(Host::Sidecar, Backend::Postgres).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugin_sqlite() {
        super::input_rules(super::start(Host::Plugin, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugin_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::input_rules(super::start(Host::Plugin, Backend::Postgres).await).await;
    }
}

/// Fires `n` logins at once and returns their answers.
async fn concurrent_logins(d: &Deployment, n: usize, email: impl Fn(usize) -> String, password: &str) -> Vec<cohort_e2e::Resp> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (c, email, password) = (d.client(), email(i), password.to_string());
        set.spawn(async move { c.login(&email, &password).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("login task"));
    }
    out
}

/// The `details.reason` of each `LOGIN_FAILED` audit row.
async fn failure_reasons(admin: &Client) -> Vec<String> {
    let audit = admin.get("/api/audit?action=LOGIN_FAILED&page_size=200").await.expect_status(200);
    audit["items"].as_array().expect("items").iter().map(|e| e["details"]["reason"].as_str().unwrap_or_default().to_string()).collect()
}

fn code(r: &cohort_e2e::Resp) -> String {
    serde_json::from_slice::<Value>(&r.body).ok().and_then(|b| b["error"]["code"].as_str().map(str::to_string)).unwrap_or_default()
}

/// 40 concurrent wrong passwords on one account get at most the limit of password
/// checks (all 40 were checked once); throttled attempts are audited once per window;
/// a full hashing queue turns logins away at once with 503 `busy`, leaving no trace.
async fn throttling_under_concurrency(d: Deployment) {
    let admin = d.admin().await;
    admin
        .post("/api/users", &json!({"email": "victim@hostile.test", "password": "victim-password-1", "role": "user"}))
        .await
        .expect_status(201);
    let throttled_status = if d.host == Host::Plugin { 503 } else { 429 };

    let answers = concurrent_logins(&d, 40, |_| "victim@hostile.test".into(), "wrong-password-1").await;
    let mut checked = answers.iter().filter(|r| r.status == 401).count();
    for r in &answers {
        let c = code(r);
        assert!(
            r.status == 401 || (r.status.as_u16() == throttled_status && c == "too_many_attempts") || (r.status == 503 && c == "busy"),
            "unexpected answer {} {c}",
            r.status
        );
        if r.status.as_u16() >= 429 {
            assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok()), "Retry-After on {} {c}", r.status);
        }
    }
    // Until the account is throttled, whatever the queue turned away.
    for _ in 0..10 {
        let r = d.client().login("victim@hostile.test", "wrong-password-1").await;
        match r.status.as_u16() {
            401 => checked += 1,
            503 if code(&r) == "busy" => {}
            _ => break,
        }
    }
    assert!(checked <= 5, "{checked} wrong passwords were checked; the limit is 5");
    d.client().login("victim@hostile.test", "victim-password-1").await.expect_error(throttled_status, "too_many_attempts");
    let reasons = failure_reasons(&admin).await;
    assert_eq!(reasons.iter().filter(|r| *r == "invalid_credentials").count(), checked, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "throttled").count(), 1, "throttling is audited once per window: {reasons:?}");

    // The hashing queue is bounded: a storm of logins on distinct accounts gets 503
    // `busy` for what does not fit, and only the checked attempts are audited.
    let before = failure_reasons(&admin).await.len();
    let answers = concurrent_logins(&d, 100, |i| format!("ghost{i}@hostile.test"), "wrong-password-1").await;
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 503 && code(r) == "busy").collect();
    let refused = answers.iter().filter(|r| r.status == 401).count();
    assert_eq!(busy.len() + refused, 100, "only 401 or 503 busy: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(!busy.is_empty(), "100 concurrent logins must overflow the hashing queue");
    assert!(busy.iter().all(|r| r.header("retry-after").is_some()), "busy answers carry Retry-After");
    assert_eq!(failure_reasons(&admin).await.len() - before, refused, "busy logins leave no audit row");
    admin.get("/api/auth/me").await.expect_status(200);
}

mod throttling_under_concurrency {
    use std::collections::BTreeMap;

    use cohort_e2e::{Backend, Deployment, Host};
    use serde_json::json;

    async fn start(host: Host, backend: Backend) -> Deployment {
        let settings =
            BTreeMap::from([("LoginMaxFailuresPerAccount".to_string(), json!(5)), ("LoginMaxFailuresPerIp".to_string(), json!(100_000))]);
        Deployment::start_with(host, backend, settings).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_sqlite() {
        super::throttling_under_concurrency(start(Host::Sidecar, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::throttling_under_concurrency(start(Host::Sidecar, Backend::Postgres).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugin_sqlite() {
        super::throttling_under_concurrency(start(Host::Plugin, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugin_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::throttling_under_concurrency(start(Host::Plugin, Backend::Postgres).await).await;
    }
}

/// Behind a trusted proxy the client is the right-most untrusted `X-Forwarded-For`
/// entry; sessions, audit and per-IP throttling use it, IPv6 per /64. From anyone
/// else, the header is ignored.
async fn client_address(d: Deployment) {
    let admin = d.admin().await;
    let via_proxy = |xff: &'static str| {
        let c = d.client();
        async move {
            c.req(Method::POST, "/api/auth/login")
                .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
                .header("x-forwarded-for", xff)
                .send()
                .await
        }
    };
    via_proxy("198.51.100.1, 203.0.113.7").await.expect_status(200);
    let sessions = admin.get("/api/auth/sessions").await.expect_status(200);
    let ips: Vec<&str> = sessions.as_array().expect("sessions").iter().filter_map(|s| s["ip"].as_str()).collect();
    assert!(ips.contains(&"203.0.113.7"), "the session records the client, not the proxy: {ips:?}");
    let logins = admin.get("/api/audit?action=LOGIN&page_size=200").await.expect_status(200);
    assert!(logins["items"].as_array().expect("items").iter().any(|e| e["ip"] == "203.0.113.7"), "{logins}");

    // Per-IP throttling (3 here) counts an IPv6 client per /64.
    let fail = |email: &'static str, xff: &'static str| {
        let c = d.client();
        async move {
            c.req(Method::POST, "/api/auth/login")
                .json(&json!({"email": email, "password": "wrong-password-1"}))
                .header("x-forwarded-for", xff)
                .send()
                .await
        }
    };
    fail("a@hostile.test", "2001:db8:1:2::a").await.expect_error(401, "invalid_credentials");
    fail("b@hostile.test", "2001:db8:1:2::b").await.expect_error(401, "invalid_credentials");
    fail("c@hostile.test", "2001:db8:1:2:ffff::c").await.expect_error(401, "invalid_credentials");
    let throttled = if d.host == Host::Plugin { 503 } else { 429 };
    fail("d@hostile.test", "2001:db8:1:2::d").await.expect_error(throttled, "too_many_attempts");
    fail("d@hostile.test", "2001:db8:1:3::d").await.expect_error(401, "invalid_credentials");
    fail("d@hostile.test", "192.0.2.44").await.expect_error(401, "invalid_credentials");
    let audit = admin.get("/api/audit?action=LOGIN_FAILED&page_size=200").await.expect_status(200);
    let ips: Vec<&str> = audit["items"].as_array().expect("items").iter().filter_map(|e| e["ip"].as_str()).collect();
    assert!(ips.contains(&"2001:db8:1:2::a") && ips.contains(&"192.0.2.44"), "the audit keeps the full address: {ips:?}");
}

mod client_address {
    use std::collections::BTreeMap;

    use cohort_e2e::{Backend, Deployment, Host};
    use serde_json::json;

    async fn start(host: Host, backend: Backend) -> Deployment {
        let settings = BTreeMap::from([
            ("TrustedProxies".to_string(), json!(["127.0.0.1", "198.51.100.0/24"])),
            ("LoginMaxFailuresPerIp".to_string(), json!(3)),
        ]);
        Deployment::start_with(host, backend, settings).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_sqlite() {
        super::client_address(start(Host::Sidecar, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugin_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::client_address(start(Host::Plugin, Backend::Postgres).await).await;
    }
}

/// A profile update that hashes while an admin deactivates, demotes or moves its user
/// must not write the old role, status or group back.
async fn profile_update_race(d: Deployment) {
    let admin = d.admin().await;
    let g1 = admin.post("/api/groups", &json!({"name": "race-1"})).await.expect_status(201)["id"].clone();
    let g2 = admin.post("/api/groups", &json!({"name": "race-2"})).await.expect_status(201)["id"].clone();
    let changes = [json!({"group_id": g2}), json!({"group_id": null}), json!({"role": "user"}), json!({"status": "inactive"})];
    for (i, change) in changes.iter().enumerate() {
        let email = format!("racer{i}@hostile.test");
        let body = json!({"email": email, "password": "racer-password-1", "role": "admin", "group_id": g1});
        let id = admin.post("/api/users", &body).await.expect_status(201)["id"].as_i64().expect("id");
        let user = d.client();
        user.login(&email, "racer-password-1").await.expect_status(200);
        // Two bcrypt runs (check the current password, hash the new one) leave the
        // admin's change time to land in between.
        let profile = {
            let user = user.clone();
            tokio::spawn(async move {
                user.put(
                    "/api/users/me/profile",
                    &json!({"new_password": "racer-password-2", "current_password": "racer-password-1", "first_name": "Racer"}),
                )
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        admin.put(&format!("/api/users/{id}"), change).await.expect_status(200);
        let answer = profile.await.expect("profile task");
        assert!(matches!(answer.status.as_u16(), 200 | 401), "profile update: {} {}", answer.status, String::from_utf8_lossy(&answer.body));
        let after = admin.get(&format!("/api/users/{id}")).await.expect_status(200);
        for (field, value) in change.as_object().expect("object") {
            assert_eq!(&after[field], value, "the admin's {field} change was undone: {after}");
        }
    }
}

mod profile_update_race {
    use cohort_e2e::{Backend, Deployment, Host};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_sqlite() {
        super::profile_update_race(Deployment::start(Host::Sidecar, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::profile_update_race(Deployment::start(Host::Sidecar, Backend::Postgres).await).await;
    }
}

/// Seconds the OpenAPI fuzzer runs per host (`COHORT_TEST_FUZZ_SECONDS` raises it).
fn fuzz_budget() -> u64 {
    std::env::var("COHORT_TEST_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
}

/// Property-based fuzzing driven by `/api/openapi.json` (schemathesis, installed by the
/// test scripts like pydicom): no 5xx, and no answer whose content type contradicts the
/// document. Its work files stay in a temporary directory.
async fn openapi_fuzz(d: Deployment) {
    let admin = d.admin().await;
    let token = admin.cookie("access_token").expect("access token");
    // Something for the id routes to find.
    let group = admin.post("/api/groups", &json!({"name": "fuzzed"})).await.expect_status(201);
    admin.post("/api/patients", &json!({"external_id": "FUZZ-1", "group_id": group["id"]})).await.expect_status(201);
    let work = tempfile::tempdir().expect("temporary directory");
    let budget = fuzz_budget();
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "schemathesis.cli", "run", &format!("{}/api/openapi.json", d.url)])
        .args(["--checks", "not_a_server_error,content_type_conformance"])
        .args(["--max-time", &budget.to_string(), "--workers", "2", "--seed", "8", "--no-shrink"])
        .args(["--request-timeout", "20", "--max-failures", "20"])
        // A logout would end the fuzzer's own session, and so would an admin it created
        // deactivating or deleting the fuzzer's user; imports take files, which
        // schemathesis cannot generate (hostile_guard and patients cover them).
        .args(["--exclude-path", "/api/auth/logout", "--exclude-path", "/api/patients/import"])
        // (and its stateful phase would revoke its own session, found through the list).
        .args(["--exclude-path-regex", "^/api/users/\\{id\\}$", "--exclude-path-regex", "^/api/auth/sessions/"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--report-dir", "report", "--suppress-health-check", "all"])
        .current_dir(work.path())
        .env("HOME", work.path())
        .stdin(std::process::Stdio::null());
    let log = work.path().join("fuzz.log");
    cmd.stdout(std::fs::File::create(&log).expect("log file"));
    cmd.stderr(std::fs::File::options().append(true).open(&log).expect("log file"));
    let mut child = KillOnDrop(cmd.spawn().expect("python3 runs (scripts/lib.sh installs schemathesis)"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(budget + 120);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for schemathesis") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "schemathesis overran its budget of {budget} s");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("No module named"), "schemathesis is not installed (scripts/lib.sh installs it):\n{text}");
    // A failed check is marked ❌ (a 5xx, an undocumented content type...); schemathesis's
    // own runtime errors (🚫, e.g. a hypothesis internal error) are shown, not failed on.
    assert!(!text.contains('❌'), "the fuzzer found failures:\n{text}");
    if !status.success() {
        eprintln!("schemathesis ended with {status} without a failed check:\n{text}");
    }
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

mod openapi_fuzz {
    use std::collections::BTreeMap;

    use cohort_e2e::{Backend, Deployment, Host};
    use serde_json::json;

    /// Throttling out of the way: the plugin answers a throttled login 503 (Orthanc 1.10.1
    /// cannot send 429), which the fuzzer would count as a server error.
    async fn start(host: Host) -> Deployment {
        let settings = BTreeMap::from([
            ("LoginMaxFailuresPerAccount".to_string(), json!(100_000)),
            ("LoginMaxFailuresPerIp".to_string(), json!(1_000_000)),
        ]);
        Deployment::start_with(host, Backend::Sqlite, settings).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_sqlite() {
        super::openapi_fuzz(start(Host::Sidecar).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugin_sqlite() {
        super::openapi_fuzz(start(Host::Plugin).await).await;
    }
}

/// Sends raw bytes to `url`'s host and returns what comes back before the server closes
/// the connection or `wait` passes.
async fn raw_exchange(url: &str, parts: &[(&[u8], std::time::Duration)], wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for (bytes, pause) in parts {
        if tcp.write_all(bytes).await.is_err() {
            break;
        }
        tokio::time::sleep(*pause).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The sidecar's own accept loop bounds what a client can hold: oversized heads get 431,
/// silent or trickling bodies 408, slow requests 408 (`RequestTimeoutSeconds`, here 3).
async fn sidecar_limits(d: Deployment) {
    use std::time::Duration;
    let admin = d.admin().await;
    // Oversized headers: refused before any work.
    let head = format!("GET /api/health HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n", "a".repeat(40 << 10));
    let answer = raw_exchange(&d.url, &[(head.as_bytes(), Duration::ZERO)], Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431") && answer.contains("headers_too_large"), "a 40 KiB header: {answer:?}");
    let r = d.client().req(Method::GET, "/api/health").header("x-padding", &"a".repeat(33 << 10)).send().await;
    r.expect_error(431, "headers_too_large");
    let many = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    let head = format!("GET /api/health HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let answer = raw_exchange(&d.url, &[(head.as_bytes(), Duration::ZERO)], Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "200 headers: {answer:?}");
    // Normal-sized headers still work.
    d.client().req(Method::GET, "/api/health").header("x-padding", &"a".repeat(8 << 10)).send().await.expect_status(200);

    // A body that stops coming: 408 after a third of the request timeout.
    let token = admin.cookie("access_token").expect("access token");
    let head = format!(
        "POST /api/groups HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let answer =
        raw_exchange(&d.url, &[(head.as_bytes(), Duration::ZERO), (b"{\"name\": \"", Duration::ZERO)], Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "a silent body: {answer:?}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "cut after about 1 s, not {:?}", started.elapsed());

    // A trickling body (a byte every 300 ms, under 1 KiB/s): 408 too.
    let mut parts: Vec<(&[u8], Duration)> = vec![(head.as_bytes(), Duration::ZERO)];
    parts.extend(std::iter::repeat_n((b"x".as_slice(), Duration::from_millis(300)), 20));
    let answer = raw_exchange(&d.url, &parts, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "a trickling body: {answer:?}");

    // A head that never ends: the connection is closed within the timeout.
    let started = std::time::Instant::now();
    let answer = raw_exchange(&d.url, &[(b"GET /api/health HTTP/1.1\r\nhost: x\r\n", Duration::ZERO)], Duration::from_secs(15)).await;
    assert!(!answer.contains("200 OK"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "closed after ~3 s, not {:?}", started.elapsed());

    // The server still serves everyone else.
    admin.get("/api/auth/me").await.expect_status(200);
}

mod sidecar_limits {
    use std::collections::BTreeMap;

    use cohort_e2e::{Backend, Deployment, Host};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_sqlite() {
        let settings = BTreeMap::from([("RequestTimeoutSeconds".to_string(), json!(3))]);
        super::sidecar_limits(Deployment::start_with(Host::Sidecar, Backend::Sqlite, settings).await).await;
    }
}

/// A `multipart/form-data` body with one file part per `(name, bytes)`.
fn multipart(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"files\"; filename=\"{name}\"\r\ncontent-type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// `IMPORT` audit rows, newest first.
async fn import_rows(admin: &Client) -> Vec<Value> {
    admin.get("/api/audit?action=IMPORT&page_size=200").await.expect_status(200)["items"].as_array().expect("items").clone()
}

/// Imports are accounted for whatever happens: a refusal because the patient is another
/// group's is an audited `ACCESS_DENIED`; on the sidecar, an import whose later part
/// fails, or whose client goes away, still registers and audits what it stored.
async fn import_bookkeeping(d: Deployment) {
    use cohort_e2e::dicom::{self, StudySpec};
    let admin = d.admin().await;
    let mut users = Vec::new();
    for name in ["alpha", "beta"] {
        let group = admin.post("/api/groups", &json!({"name": name})).await.expect_status(201)["id"].clone();
        let email = format!("{name}@hostile.test");
        admin
            .post("/api/users", &json!({"email": email, "password": "importer-password-1", "role": "user", "group_id": group}))
            .await
            .expect_status(201);
        let c = d.client();
        c.login(&email, "importer-password-1").await.expect_status(200);
        users.push(c);
    }
    let study = dicom::study(&StudySpec::new("IPP-HOSTILE-X").studies(1).series(1).instances(1).seed(31));
    let file = std::fs::read(&study.files[0].path).expect("DICOM file");
    users[0].req(Method::POST, "/api/patients/import").body("application/dicom", file.clone()).send().await.expect_status(200);
    let report = users[1].req(Method::POST, "/api/patients/import").body("application/dicom", file.clone()).send().await.expect_status(200);
    assert_eq!(report["instances"]["failed"], 1, "{report}");
    let denied = admin.get("/api/audit?action=ACCESS_DENIED&page_size=200").await.expect_status(200);
    let refusal = denied["items"].as_array().expect("items").iter().find(|e| e["details"]["reason"] == "patient_of_another_group");
    let refusal = refusal.unwrap_or_else(|| panic!("the cross-group refusal is audited: {denied}"));
    assert_eq!(refusal["actor_email"], "beta@hostile.test");

    if d.host != Host::Sidecar {
        return; // Orthanc reads a plugin's whole body first, and swallows multipart.
    }
    // A later part fails: the first part's instance is registered and audited.
    let second = dicom::study(&StudySpec::new("IPP-HOSTILE-Y").studies(1).series(1).instances(1).seed(32));
    let first_part = std::fs::read(&second.files[0].path).expect("DICOM file");
    let body = multipart("b0undary", &[("ok.dcm", &first_part), ("broken.zip", b"PK\x03\x04 not really a zip at all")]);
    let before = import_rows(&admin).await.len();
    let r = users[0].req(Method::POST, "/api/patients/import").body("multipart/form-data; boundary=b0undary", body).send().await;
    r.expect_error(422, "invalid_zip");
    let rows = import_rows(&admin).await;
    assert_eq!(rows.len(), before + 1, "the interrupted import is audited");
    assert_eq!(rows[0]["details"]["completed"], false, "{}", rows[0]);
    assert_eq!(rows[0]["details"]["instances"]["stored"], 1, "{}", rows[0]);
    assert_eq!(rows[0]["details"]["interrupted_by"]["code"], "invalid_zip", "{}", rows[0]);
    let found = admin.get("/api/patients?q=IPP-HOSTILE-Y").await.expect_status(200);
    assert_eq!(found["total"], 1, "the stored instance's patient is registered: {found}");

    // The client goes away after the first part: still registered and audited.
    let third = dicom::study(&StudySpec::new("IPP-HOSTILE-Z").studies(1).series(1).instances(1).seed(33));
    let part = std::fs::read(&third.files[0].path).expect("DICOM file");
    let mut body = multipart("b0undary", &[("first.dcm", &part)]);
    body.truncate(body.len() - "--b0undary--\r\n".len());
    body.extend_from_slice(b"--b0undary\r\ncontent-disposition: form-data; name=\"files\"; filename=\"never.dcm\"\r\n\r\nDI");
    let token = users[0].cookie("access_token").expect("token");
    let head = format!(
        "POST /api/patients/import HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: multipart/form-data; boundary=b0undary\r\ncontent-length: {}\r\n\r\n",
        body.len() + 100_000
    );
    let before = import_rows(&admin).await.len();
    raw_exchange(
        &d.url,
        &[(head.as_bytes(), std::time::Duration::ZERO), (&body, std::time::Duration::from_millis(1500))],
        std::time::Duration::ZERO,
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let rows = loop {
        let rows = import_rows(&admin).await;
        if rows.len() > before || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), before + 1, "an import whose client went away is audited");
    assert_eq!(rows[0]["details"]["completed"], false, "{}", rows[0]);
    assert_eq!(rows[0]["details"]["instances"]["stored"], 1, "{}", rows[0]);
    let found = admin.get("/api/patients?q=IPP-HOSTILE-Z").await.expect_status(200);
    assert_eq!(found["total"], 1, "{found}");
}

mod import_bookkeeping {
    use cohort_e2e::{Backend, Deployment, Host};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_sqlite() {
        super::import_bookkeeping(Deployment::start(Host::Sidecar, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::import_bookkeeping(Deployment::start(Host::Sidecar, Backend::Postgres).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plugin_sqlite() {
        super::import_bookkeeping(Deployment::start(Host::Plugin, Backend::Sqlite).await).await;
    }
}
