//! The three cookies of a browser session and how they are set and cleared.

use chrono::{DateTime, Utc};

pub const ACCESS: &str = "access_token";
pub const REFRESH: &str = "refresh_token";
pub const CSRF: &str = "csrf_token";
/// The refresh cookie only travels to the auth routes.
pub const REFRESH_PATH: &str = "/api/auth";

/// Builds `Set-Cookie` values for the three cookies.
#[derive(Clone, Copy, Debug)]
pub struct CookieJar {
    pub secure: bool,
}

impl CookieJar {
    fn cookie(&self, name: &str, value: &str, path: &str, same_site: &str, http_only: bool, max_age: i64) -> String {
        let mut c = format!("{name}={value}; Path={path}; SameSite={same_site}; Max-Age={max_age}");
        if http_only {
            c.push_str("; HttpOnly");
        }
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }

    /// The cookies of a fresh login or refresh.
    pub fn session(
        &self,
        access: &str,
        access_expires: DateTime<Utc>,
        refresh: &str,
        refresh_expires: DateTime<Utc>,
        csrf: &str,
    ) -> [String; 3] {
        let now = Utc::now();
        let max_age = |at: DateTime<Utc>| (at - now).num_seconds().max(0);
        [
            self.cookie(ACCESS, access, "/", "Lax", true, max_age(access_expires)),
            self.cookie(REFRESH, refresh, REFRESH_PATH, "Strict", true, max_age(refresh_expires)),
            self.cookie(CSRF, csrf, "/", "Strict", false, max_age(refresh_expires)),
        ]
    }

    /// Expired cookies that make the browser forget the session.
    pub fn cleared(&self) -> [String; 3] {
        [
            self.cookie(ACCESS, "", "/", "Lax", true, 0),
            self.cookie(REFRESH, "", REFRESH_PATH, "Strict", true, 0),
            self.cookie(CSRF, "", "/", "Strict", false, 0),
        ]
    }
}

/// Finds a cookie's value in `Cookie` request headers. A name sent twice with different
/// values counts as absent: a sibling site may have "tossed" its own cookie of that
/// name (browsers send the more specific path first), and picking either one could make
/// the victim act as the attacker's account.
pub fn find<'a>(cookie_headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    let mut found: Option<&'a str> = None;
    let values = cookie_headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'));
    for value in values {
        match found {
            Some(seen) if seen != value => return None,
            _ => found = Some(value),
        }
    }
    found.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_carry_the_designed_attributes() {
        let at = Utc::now() + chrono::Duration::minutes(15);
        let rt = Utc::now() + chrono::Duration::days(7);
        let [a, r, c] = CookieJar { secure: true }.session("A", at, "R", rt, "C");
        assert!(a.starts_with("access_token=A; Path=/; SameSite=Lax; Max-Age=") && a.ends_with("; HttpOnly; Secure"), "{a}");
        assert!(r.starts_with("refresh_token=R; Path=/api/auth; SameSite=Strict;") && r.contains("HttpOnly"), "{r}");
        assert!(c.starts_with("csrf_token=C; Path=/; SameSite=Strict;") && !c.contains("HttpOnly"), "{c}");
        let [a, ..] = CookieJar { secure: false }.cleared();
        assert_eq!(a, "access_token=; Path=/; SameSite=Lax; Max-Age=0; HttpOnly");
    }

    #[test]
    fn cookie_values_are_found_among_several_headers() {
        let headers = ["theme=dark; access_token=abc", "csrf_token=xyz"];
        assert_eq!(find(headers, "access_token"), Some("abc"));
        assert_eq!(find(headers, "csrf_token"), Some("xyz"));
        assert_eq!(find(headers, "refresh_token"), None);
        assert_eq!(find(["access_token="], "access_token"), None);
    }

    #[test]
    fn a_tossed_cookie_makes_the_name_ambiguous() {
        assert_eq!(find(["access_token=evil; access_token=mine"], "access_token"), None);
        assert_eq!(find(["access_token=evil", "access_token=mine"], "access_token"), None);
        // The same value twice is not ambiguous.
        assert_eq!(find(["access_token=mine; access_token=mine"], "access_token"), Some("mine"));
    }
}
