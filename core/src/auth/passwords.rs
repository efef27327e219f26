//! bcrypt hashing off the async executor, bounded so a login storm cannot take every
//! core away from the other requests.

use std::sync::Arc;

use tokio::sync::Semaphore;

#[derive(Debug)]
pub struct Passwords {
    cost: u32,
    permits: Arc<Semaphore>,
    /// A real hash at the configured cost, verified when the email is unknown so both
    /// answers take the same time.
    dummy_hash: String,
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl Passwords {
    /// Builds the hasher; computes the dummy hash once (one bcrypt run).
    pub async fn new(cost: u32) -> Result<Self, HashError> {
        // At most half the cores hash at once (at least one): the rest keep serving.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let permits = Arc::new(Semaphore::new((cores / 2).max(1)));
        let dummy = super::random_token(18);
        let dummy_hash = blocking(move || bcrypt::hash(dummy, cost)).await?;
        Ok(Passwords { cost, permits, dummy_hash })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|e| HashError(e.to_string()))?;
        let (password, cost) = (password.to_string(), self.cost);
        blocking(move || bcrypt::hash(password, cost)).await
    }

    /// Verifies `password` against `hash`, or against the dummy hash when `hash` is
    /// `None` (unknown account), in which case the answer is always false.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        let _permit = self.permits.acquire().await.map_err(|e| HashError(e.to_string()))?;
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_string();
        let password = password.to_string();
        let ok = blocking(move || match bcrypt::non_truncating_verify(password, &hash) {
            // Over 72 bytes: cannot match any stored password (we refuse to set those).
            Err(bcrypt::BcryptError::Truncation(_)) => Ok(false),
            other => other,
        })
        .await?;
        Ok(ok && known)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> bcrypt::BcryptResult<T> + Send + 'static) -> Result<T, HashError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| HashError(e.to_string()))?.map_err(|e| HashError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let p = Passwords::new(10).await.expect("hasher");
        let h = p.hash("correct horse battery").await.expect("hash");
        assert!(h.starts_with("$2b$10$"));
        assert!(p.verify("correct horse battery", Some(&h)).await.expect("verify"));
        assert!(!p.verify("wrong horse battery", Some(&h)).await.expect("verify"));
        assert!(!p.verify("correct horse battery", None).await.expect("verify"));
        assert!(!p.verify(&"x".repeat(100), Some(&h)).await.expect("long input is a mismatch"));
    }
}
