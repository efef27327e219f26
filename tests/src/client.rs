//! A client that behaves like a browser front end: a cookie jar, and the
//! `X-CSRF-Token` header copied from the `csrf_token` cookie on every write.

use std::sync::Arc;

use bytes::Bytes;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    jar: Arc<Jar>,
    /// Sent as `Authorization: Bearer` on every request when set.
    bearer: Option<String>,
}

/// A whole answer, read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the status and returns the JSON body (or `Null` when empty).
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", String::from_utf8_lossy(&self.body));
        if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body).unwrap_or(Value::Null)
        }
    }

    /// Asserts an error answer: status and `error.code`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        let body = self.expect_status(status);
        assert_eq!(body["error"]["code"], code, "unexpected error body: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {body}");
        body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect()
    }
}

/// A request being built; CSRF is added for writes unless turned off.
pub struct Req<'a> {
    client: &'a Client,
    builder: reqwest::RequestBuilder,
    csrf: bool,
}

impl Req<'_> {
    pub fn json(mut self, body: &Value) -> Self {
        self.builder = self.builder.json(body);
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.header("content-type", content_type).body(body);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn bearer(mut self, token: &str) -> Self {
        self.builder = self.builder.bearer_auth(token);
        self
    }

    /// Leaves out the `X-CSRF-Token` header, as a forged cross-site request would.
    pub fn without_csrf(mut self) -> Self {
        self.csrf = false;
        self
    }

    pub async fn send(self) -> Resp {
        let mut builder = self.builder;
        if self.csrf {
            if let Some(token) = self.client.cookie("csrf_token") {
                builder = builder.header("x-csrf-token", token);
            }
        }
        let resp = builder.send().await.expect("HTTP request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("HTTP body");
        Resp { status, headers, body }
    }
}

impl Client {
    pub fn new(base: &str) -> Client {
        Self::with_user_agent(base, "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    }

    /// A client announcing itself as a particular device.
    pub fn with_user_agent(base: &str, user_agent: &str) -> Client {
        Self::build(base, user_agent, None)
    }

    /// A client whose connections come from `local` (e.g. `127.0.0.2`, another loopback
    /// address), so the server sees a peer address other than `127.0.0.1`.
    pub fn from_address(base: &str, user_agent: &str, local: std::net::IpAddr) -> Client {
        Self::build(base, user_agent, Some(local))
    }

    fn build(base: &str, user_agent: &str, local: Option<std::net::IpAddr>) -> Client {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .user_agent(user_agent)
            .local_address(local)
            // Below Orthanc's 1 s keep-alive timeout: a POST sent on a connection Orthanc
            // is closing fails with IncompleteMessage and is not retried.
            .pool_idle_timeout(std::time::Duration::from_millis(500))
            .build()
            .expect("HTTP client");
        Client { base: base.trim_end_matches('/').to_string(), http, jar, bearer: None }
    }

    /// The same client, authenticating every request with a Bearer token.
    pub fn with_bearer(mut self, token: &str) -> Client {
        self.bearer = Some(token.to_string());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str) -> Req<'_> {
        let csrf = !matches!(method, Method::GET | Method::HEAD);
        let mut builder = self.http.request(method, self.url(path));
        if let Some(token) = &self.bearer {
            builder = builder.bearer_auth(token);
        }
        Req { client: self, builder, csrf }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path).send().await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.req(Method::POST, path).json(body).send().await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.req(Method::PUT, path).json(body).send().await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.req(Method::DELETE, path).send().await
    }

    pub async fn login(&self, email: &str, password: &str) -> Resp {
        self.post("/api/auth/login", &serde_json::json!({"email": email, "password": password})).await
    }

    /// The value of a cookie the jar would send to `path`.
    pub fn cookie_at(&self, path: &str, name: &str) -> Option<String> {
        let url = url::Url::parse(&self.url(path)).expect("url");
        let header: HeaderValue = self.jar.cookies(&url)?;
        let text = header.to_str().ok()?.to_string();
        text.split(';').filter_map(|p| p.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookie_at("/api/x", name)
    }

    /// The refresh token, which only travels to `/api/auth`.
    pub fn refresh_token(&self) -> Option<String> {
        self.cookie_at("/api/auth/refresh", "refresh_token")
    }

    /// Puts a cookie in the jar, as if the server had set it.
    pub fn set_cookie(&self, path: &str, name: &str, value: &str) {
        let url = url::Url::parse(&self.url(path)).expect("url");
        self.jar.add_cookie_str(&format!("{name}={value}; Path={path}"), &url);
    }
}
