//! bcrypt on a few dedicated low-priority threads, so that a login storm cannot take
//! the CPU away from the other requests: at most half the cores hash at once, at the
//! lowest scheduling priority (nice 19), and the async executor never waits on a hash.
//! The queue is bounded ([`QUEUE_PER_THREAD`] jobs per thread): beyond it a caller is
//! turned away at once ([`HashError::Busy`], a 503 `busy`) instead of waiting in line,
//! which in the plugin would hold one of Orthanc's HTTP threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Hashing jobs admitted per hashing thread, running or waiting.
pub const QUEUE_PER_THREAD: usize = 16;

pub struct Passwords {
    cost: u32,
    /// Jobs admitted and not finished; at most `capacity`.
    admitted: AtomicUsize,
    capacity: usize,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// A real hash at the configured cost, verified when the email is unknown so both
    /// answers take the same time.
    dummy_hash: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("cost", &self.cost).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The hashing queue is full; the caller should try again shortly.
    #[error("the password-hashing queue is full")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// A place in the hashing queue, given back when dropped. Taking it first lets a login
/// be turned away before anything about it is counted or audited.
#[derive(Debug)]
pub struct Admission<'a>(&'a Passwords);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission<'_> {
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let (password, cost) = (password.to_string(), self.0.cost);
        self.0.run(move || bcrypt::hash(password, cost)).await
    }

    /// Verifies `password` against `hash`, or against the dummy hash when `hash` is
    /// `None` (unknown account), in which case the answer is always false.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.0.dummy_hash).to_string();
        let password = password.to_string();
        // Over 72 bytes cannot match any stored password (we refuse to set those). Up to
        // 72, verify exactly as `bcrypt::hash` hashed: it appends a NUL and keeps the first
        // 72 bytes, so `non_truncating_verify` would refuse a 72-byte password that was
        // accepted when it was set.
        if password.len() > crate::domain::PASSWORD_MAX_BYTES {
            return Ok(false);
        }
        let ok = self.0.run(move || bcrypt::verify(password, &hash)).await?;
        Ok(ok && known)
    }
}

impl Passwords {
    /// Starts the hashing threads and computes the dummy hash once (one bcrypt run).
    pub async fn new(cost: u32) -> Result<Self, HashError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..(cores / 2).max(1) {
            let rx = rx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("cohort-bcrypt-{i}"))
                .spawn(move || {
                    if let Err(e) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
                        tracing::warn!(error = ?e, "could not lower the priority of a password-hashing thread");
                    }
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| HashError::Failed(format!("cannot start a hashing thread: {e}")))?;
            workers.push(worker);
        }
        let capacity = QUEUE_PER_THREAD * workers.len();
        let mut passwords = Passwords {
            cost,
            admitted: AtomicUsize::new(0),
            capacity,
            jobs: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            dummy_hash: String::new(),
        };
        let dummy = super::random_token(18);
        passwords.dummy_hash = passwords.run(move || bcrypt::hash(dummy, cost)).await?;
        Ok(passwords)
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Takes a place in the hashing queue, or [`HashError::Busy`] when it is full.
    pub fn admit(&self) -> Result<Admission<'_>, HashError> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.capacity).then_some(n + 1))
            .map(|_| Admission(self))
            .map_err(|_| HashError::Busy)
    }

    /// Jobs admitted and not finished (the queue depth).
    pub fn queued(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Runs `f` on a hashing thread.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> bcrypt::BcryptResult<T> + Send + 'static) -> Result<T, HashError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = match self.jobs.lock() {
            Ok(jobs) => jobs.as_ref().map(|j| j.send(job).is_ok()).unwrap_or(false),
            Err(_) => false,
        };
        if !sent {
            return Err(HashError::Failed("the hashing threads have stopped".into()));
        }
        rx.await.map_err(|_| HashError::Failed("a hashing thread stopped".into()))?.map_err(|e| HashError::Failed(e.to_string()))
    }

    /// Hashes a new password (when the queue has room).
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        self.admit()?.hash(password).await
    }

    /// Verifies a password (when the queue has room); see [`Admission::verify`].
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        self.admit()?.verify(password, hash).await
    }

    /// Stops the hashing threads after the jobs already queued (the plugin calls this
    /// before Orthanc unloads it, so no thread of ours outlives the library).
    pub fn shutdown(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let workers = self.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Passwords {
    fn drop(&mut self) {
        self.shutdown();
    }
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
        // bcrypt's 72-byte edge: a password of exactly 72 bytes, accepted when set, works.
        let longest = "é".repeat(36);
        let h72 = p.hash(&longest).await.expect("hash");
        assert!(p.verify(&longest, Some(&h72)).await.expect("verify"));
        assert!(!p.verify(&"é".repeat(35), Some(&h72)).await.expect("verify"));
        p.shutdown();
        assert!(p.hash("after shutdown").await.is_err());
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let p = Passwords::new(10).await.expect("hasher");
        let held: Vec<_> = (0..p.capacity).map(|_| p.admit().expect("room")).collect();
        assert_eq!(p.queued(), p.capacity);
        assert!(matches!(p.admit(), Err(HashError::Busy)));
        assert!(matches!(p.verify("some password!", None).await, Err(HashError::Busy)));
        drop(held);
        assert_eq!(p.queued(), 0);
        assert!(p.admit().is_ok());
    }

    #[tokio::test]
    async fn hashing_runs_at_the_lowest_priority() {
        let p = Passwords::new(10).await.expect("hasher");
        // Field 19 of /proc/thread-self/stat is the nice value (after the command name,
        // which is in parentheses and may contain spaces).
        let nice = p
            .run(|| {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
                let after = stat.rsplit_once(')').map(|(_, rest)| rest.to_string()).unwrap_or_default();
                Ok(after.split_whitespace().nth(16).and_then(|n| n.parse::<i32>().ok()).unwrap_or(0))
            })
            .await
            .expect("job");
        assert_eq!(nice, 19);
    }
}
