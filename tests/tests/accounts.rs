//! The account side as a browser front end uses it, end to end against each
//! deployment: bootstrap admin, groups and users, sessions on two devices, revocation,
//! refresh rotation and reuse detection, profile rules, logout, and the audit trail.

use cohort_e2e::{per_deployment, Client, Deployment, ADMIN_EMAIL};
use serde_json::{json, Value};

const ALICE: &str = "alice@cohort.test";
const ALICE_PW: &str = "alice-password-1";

fn actions(audit: &Value) -> Vec<(String, String, String)> {
    audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["actor_email"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn account_lifecycle(d: Deployment) {
    // Bootstrap admin logs in and sees itself.
    let admin = d.admin().await;
    let me = admin.get("/api/auth/me").await.expect_status(200);
    assert_eq!((me["email"].as_str(), me["role"].as_str()), (Some(ADMIN_EMAIL), Some("admin")));
    assert!(me.get("hashed_password").is_none());

    // A group and a user in it.
    let group = admin.post("/api/groups", &json!({"name": "Neuro-imaging"})).await.expect_status(201);
    let created = admin
        .post(
            "/api/users",
            &json!({"email": "Alice@Cohort.test", "password": ALICE_PW, "role": "user",
                                    "group_id": group["id"], "first_name": "Alice", "last_name": "Durand"}),
        )
        .await
        .expect_status(201);
    assert_eq!(created["email"], ALICE, "emails are stored lower-cased");
    assert_eq!(created["group_id"], group["id"]);
    let alice_id = created["id"].as_i64().expect("id");

    // A failed login first: audited, and indistinguishable from an unknown email.
    let stranger = d.client();
    let wrong = stranger.login(ALICE, "not-the-password").await.expect_error(401, "invalid_credentials");
    let unknown = stranger.login("nobody@cohort.test", "not-the-password").await.expect_error(401, "invalid_credentials");
    assert_eq!(wrong, unknown);

    // Alice on two devices.
    let laptop = d.client();
    // The phone connects from another loopback address: its own client address.
    let phone_ip: std::net::IpAddr = [127, 0, 0, 2].into();
    let phone = Client::from_address(&d.url, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) AppleWebKit Safari/604.1", phone_ip);
    let login = laptop.login(ALICE, ALICE_PW).await;
    let body = login.expect_status(200);
    assert_eq!(body["user"]["id"], alice_id);
    assert_eq!(body["csrf_token"].as_str(), laptop.cookie("csrf_token").as_deref());
    let cookies = login.set_cookies();
    assert!(cookies.iter().any(|c| c.starts_with("access_token=") && c.contains("HttpOnly") && c.contains("SameSite=Lax")));
    assert!(cookies.iter().any(|c| c.starts_with("refresh_token=") && c.contains("Path=/api/auth") && c.contains("SameSite=Strict")));
    assert!(cookies.iter().any(|c| c.starts_with("csrf_token=") && !c.contains("HttpOnly")));
    phone.login(ALICE, ALICE_PW).await.expect_status(200);

    // Sessions: two, the laptop's flagged current; the laptop revokes the phone's.
    let sessions = laptop.get("/api/auth/sessions").await.expect_status(200);
    let sessions = sessions.as_array().expect("list").clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device"], "Firefox on Linux");
    let phone_session = sessions.iter().find(|s| s["current"] == false).expect("phone session");
    assert_eq!(phone_session["device"], "Safari on iOS");
    // Each session keeps the address it was opened from.
    assert_eq!((current[0]["ip"].as_str(), phone_session["ip"].as_str()), (Some("127.0.0.1"), Some("127.0.0.2")), "{sessions:?}");
    phone.get("/api/auth/me").await.expect_status(200);
    laptop.delete(&format!("/api/auth/sessions/{}", phone_session["id"].as_str().expect("id"))).await.expect_status(204);
    phone.get("/api/auth/me").await.expect_error(401, "session_revoked");
    assert_eq!(laptop.get("/api/auth/sessions").await.expect_status(200).as_array().map(Vec::len), Some(1));
    // Someone else's real session is not found (nor is a made-up id), and stays alive.
    let admin_sessions = admin.get("/api/auth/sessions").await.expect_status(200);
    let admin_session = admin_sessions[0]["id"].as_str().expect("the admin's session id").to_string();
    laptop.delete(&format!("/api/auth/sessions/{admin_session}")).await.expect_error(404, "not_found");
    laptop.delete("/api/auth/sessions/not-a-session").await.expect_error(404, "not_found");
    admin.get("/api/auth/me").await.expect_status(200);
    assert_eq!(admin.get("/api/auth/sessions").await.expect_status(200).as_array().map(Vec::len), Some(1));

    // Refresh rotates the tokens; presenting the spent refresh token revokes the session.
    let spent = laptop.refresh_token().expect("refresh cookie");
    let refreshed = laptop.req(reqwest::Method::POST, "/api/auth/refresh").send().await.expect_status(200);
    assert_eq!(refreshed["user"]["id"], alice_id);
    let fresh = laptop.refresh_token().expect("new refresh cookie");
    assert_ne!(fresh, spent);
    laptop.get("/api/auth/me").await.expect_status(200);
    laptop.set_cookie("/api/auth", "refresh_token", &spent);
    laptop.req(reqwest::Method::POST, "/api/auth/refresh").send().await.expect_error(401, "refresh_reused");
    laptop.get("/api/auth/me").await.expect_error(401, "session_revoked");
    laptop.set_cookie("/api/auth", "refresh_token", &fresh);
    laptop.req(reqwest::Method::POST, "/api/auth/refresh").send().await.expect_error(401, "session_revoked");

    // Profile: the current password is checked; role escalation is refused.
    let alice = d.client();
    alice.login(ALICE, ALICE_PW).await.expect_status(200);
    alice
        .put("/api/users/me/profile", &json!({"new_password": "alice-password-2", "current_password": "wrong-password-x"}))
        .await
        .expect_error(403, "invalid_current_password");
    alice.put("/api/users/me/profile", &json!({"new_password": "alice-password-2"})).await.expect_error(422, "validation_error");
    let escalation = alice.put("/api/users/me/profile", &json!({"first_name": "Alicia", "role": "admin"})).await;
    let err = escalation.expect_error(422, "validation_error");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.starts_with("role")), "{err}");
    assert_eq!(alice.get("/api/auth/me").await.expect_status(200)["role"], "user");
    assert_eq!(alice.get("/api/auth/me").await.expect_status(200)["first_name"], "Alice", "a refused update changes nothing");
    let other_device = d.client();
    other_device.login(ALICE, ALICE_PW).await.expect_status(200);
    let updated = alice
        .put("/api/users/me/profile", &json!({"first_name": "Alicia", "new_password": "alice-password-2", "current_password": ALICE_PW}))
        .await
        .expect_status(200);
    assert_eq!((updated["first_name"].as_str(), updated["role"].as_str()), (Some("Alicia"), Some("user")));
    alice.get("/api/auth/me").await.expect_status(200);
    other_device.get("/api/auth/me").await.expect_error(401, "session_revoked");
    d.client().login(ALICE, ALICE_PW).await.expect_error(401, "invalid_credentials");

    // Logout ends the session and clears the cookies.
    let logout = alice.req(reqwest::Method::POST, "/api/auth/logout").send().await;
    logout.expect_status(204);
    assert!(logout.set_cookies().iter().any(|c| c.starts_with("access_token=;") && c.contains("Max-Age=0")));
    alice.get("/api/auth/me").await.expect_error(401, "not_authenticated");

    // The admin sees every one of those events.
    let audit = admin.get("/api/audit?page_size=200").await.expect_status(200);
    let seen = actions(&audit);
    for (action, actor, outcome) in [
        ("LOGIN", ADMIN_EMAIL, "success"),
        ("CREATE", ADMIN_EMAIL, "success"),
        ("LOGIN_FAILED", ALICE, "failure"),
        ("LOGIN_FAILED", "nobody@cohort.test", "failure"),
        ("LOGIN", ALICE, "success"),
        ("SESSION_REVOKE", ALICE, "success"),
        ("REFRESH", ALICE, "success"),
        ("REFRESH_REUSE", ALICE, "failure"),
        ("UPDATE", ALICE, "failure"),
        ("ACCESS_DENIED", ALICE, "denied"),
        ("PASSWORD_CHANGE", ALICE, "success"),
        ("UPDATE", ALICE, "success"),
        ("LOGOUT", ALICE, "success"),
    ] {
        assert!(
            seen.iter().any(|(a, e, o)| a == action && e == actor && o == outcome),
            "audit lacks {action} by {actor} ({outcome}); saw {seen:?}"
        );
    }
    // Audit rows name the client address too.
    let logins = admin.get(&format!("/api/audit?action=LOGIN&user_id={alice_id}&page_size=50")).await.expect_status(200);
    let mut ips: Vec<&str> = logins["items"].as_array().expect("items").iter().filter_map(|e| e["ip"].as_str()).collect();
    ips.sort_unstable();
    assert_eq!(ips, ["127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"], "{logins}");
    let at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().expect("at")).expect("an RFC 3339 timestamp");
    assert!(audit["items"].as_array().expect("items").windows(2).all(|w| at(&w[0]) >= at(&w[1])), "newest first");
    // Alice logged in on the laptop, the phone, and twice more for the profile checks.
    let only_logins = admin.get(&format!("/api/audit?action=LOGIN&user_id={alice_id}")).await.expect_status(200);
    assert_eq!(only_logins["total"], 4, "{only_logins}");
    assert!(actions(&only_logins).iter().all(|(a, e, _)| a == "LOGIN" && e == ALICE));

    // Users cannot read the audit trail.
    let bob = d.client();
    bob.login(ALICE, "alice-password-2").await.expect_status(200);
    bob.get("/api/audit").await.expect_error(403, "forbidden");
}
per_deployment!(account_lifecycle);
