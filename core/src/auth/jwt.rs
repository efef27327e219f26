//! HS256 access and refresh tokens. Only HS256 is accepted; `typ` keeps the two kinds
//! apart, and every token names its session (`sid`) so revocation takes effect at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::app::TtlCache;

pub const ISSUER: &str = "cohort";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    Access,
    Refresh,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub sid: String,
    pub typ: TokenType,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub iss: String,
}

/// Why a token was refused. All of them answer 401; the distinction is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token of the wrong type")]
    WrongType,
    #[error("invalid token: {0}")]
    Invalid(String),
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature, algorithm, issuer and required claims were checked, with
    /// their claims: the same token, byte for byte, is then only checked for expiry and
    /// type (the check was ~3.5 % of Orthanc's CPU on the plugin's image route).
    verified: TtlCache<String, Claims>,
}

/// Seconds of clock skew allowed on `exp` (jsonwebtoken's `leeway`, applied alike to
/// remembered tokens).
const LEEWAY: i64 = 5;
/// Tokens remembered at most (~2 MB).
const VERIFIED_MAX: usize = 4096;
/// How long a token is remembered (its own expiry is checked at every use regardless).
const VERIFIED_TTL: Duration = Duration::from_secs(300);

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = LEEWAY.unsigned_abs();
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: TtlCache::bounded(VERIFIED_TTL, VERIFIED_MAX),
        }
    }

    /// Signs a token; returns it with its `jti`.
    pub fn issue(&self, user_id: i64, session_id: &str, typ: TokenType, expires_at: DateTime<Utc>) -> (String, String) {
        let jti = super::random_token(16);
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            typ,
            iat: Utc::now().timestamp(),
            exp: expires_at.timestamp(),
            jti: jti.clone(),
            iss: ISSUER.to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            // HS256 signing of a serialisable struct cannot fail.
            .unwrap_or_default();
        (token, jti)
    }

    /// Verifies signature, algorithm, issuer, expiry and type.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        self.verify_at(token, expected, Utc::now().timestamp())
    }

    /// [`JwtKeys::verify`] with the clock at `now` for the expiry of a remembered token.
    fn verify_at(&self, token: &str, expected: TokenType, now: i64) -> Result<Claims, TokenError> {
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid(e.to_string()),
                })?;
                self.verified.put(token.to_string(), data.claims.clone());
                data.claims
            }
        };
        // As jsonwebtoken decides it, for a token checked earlier.
        if claims.exp < now - LEEWAY {
            return Err(TokenError::Expired);
        }
        if claims.typ != expected {
            return Err(TokenError::WrongType);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use chrono::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_round_trips_with_its_type() {
        let keys = JwtKeys::new(SECRET);
        let (token, jti) = keys.issue(7, "sid1", TokenType::Access, Utc::now() + Duration::minutes(5));
        let claims = keys.verify(&token, TokenType::Access).expect("valid");
        assert_eq!((claims.sub.as_str(), claims.sid.as_str(), claims.jti), ("7", "sid1", jti));
        assert_eq!(keys.verify(&token, TokenType::Refresh).expect_err("wrong type"), TokenError::WrongType);
    }

    #[test]
    fn a_verified_token_is_remembered_but_still_expires() {
        let keys = JwtKeys::new(SECRET);
        let expires = Utc::now() + Duration::minutes(5);
        let (token, _) = keys.issue(7, "s", TokenType::Access, expires);
        keys.verify(&token, TokenType::Access).expect("valid");
        assert!(keys.verified.get(&token).is_some());
        // Remembered: the type is still checked, and the expiry against the clock.
        assert_eq!(keys.verify(&token, TokenType::Refresh).expect_err("wrong type"), TokenError::WrongType);
        assert!(keys.verify_at(&token, TokenType::Access, expires.timestamp() + LEEWAY).is_ok());
        assert_eq!(keys.verify_at(&token, TokenType::Access, expires.timestamp() + LEEWAY + 1).expect_err("expired"), TokenError::Expired);
        // One character changed in the signature is another token, checked in full.
        let mut forged = token.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert!(matches!(keys.verify(&forged, TokenType::Access), Err(TokenError::Invalid(_))));
        assert!(keys.verified.get(&forged).is_none());
        // Another key's instance remembers nothing of this one's tokens.
        let other = JwtKeys::new(b"another secret of thirty-two bytes!!");
        assert!(matches!(other.verify(&token, TokenType::Access), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let keys = JwtKeys::new(SECRET);
        let expires = Utc::now() + Duration::minutes(5);
        let tokens: Vec<String> = (0..VERIFIED_MAX + 10).map(|i| keys.issue(i as i64, "s", TokenType::Access, expires).0).collect();
        for token in &tokens {
            keys.verify(token, TokenType::Access).expect("valid");
        }
        // Full at the last ones: the first were let go, the last are remembered.
        assert!(keys.verified.get(&tokens[0]).is_none());
        assert!(keys.verified.get(&tokens[VERIFIED_MAX + 9]).is_some());
    }

    #[test]
    fn expired_forged_and_unsigned_tokens_are_refused() {
        let keys = JwtKeys::new(SECRET);
        let (old, _) = keys.issue(7, "s", TokenType::Access, Utc::now() - Duration::minutes(1));
        assert_eq!(keys.verify(&old, TokenType::Access).expect_err("expired"), TokenError::Expired);

        let other = JwtKeys::new(b"another secret of thirty-two bytes!!");
        let (forged, _) = other.issue(7, "s", TokenType::Access, Utc::now() + Duration::minutes(5));
        assert!(matches!(keys.verify(&forged, TokenType::Access), Err(TokenError::Invalid(_))));

        let (good, _) = keys.issue(7, "s", TokenType::Access, Utc::now() + Duration::minutes(5));
        let payload = good.split('.').nth(1).expect("payload");
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(keys.verify(&format!("{none_header}.{payload}."), TokenType::Access).is_err());
        let hs512 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let sig = good.split('.').nth(2).expect("sig");
        assert!(keys.verify(&format!("{hs512}.{payload}.{sig}"), TokenType::Access).is_err());
    }
}
