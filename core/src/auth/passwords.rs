//! bcrypt on a few dedicated low-priority threads, so that a login storm cannot take
//! the CPU away from the other requests: at most half the cores hash at once, at the
//! lowest scheduling priority (nice 19), and the async executor never waits on a hash.
//! The queue is bounded ([`QUEUE_PER_THREAD`] jobs per thread): beyond it a caller is
//! turned away at once ([`HashError::Busy`], a 503 `busy`) instead of waiting in line,
//! which in the plugin would hold one of Orthanc's HTTP threads.
//!
//! At nice 19 a hash only gets the CPU nobody else wants: under sustained load (the soak:
//! 200 clients, 1.4 sign-ins a second) the queue filled and sign-ins were turned away.
//! So one more thread, at the process's own priority, takes any job that has waited
//! [`RESCUE_AFTER`], and then rests three times as long as that hash took: sign-ins keep
//! moving under any load, and a login storm takes at most a quarter of one core at
//! normal priority.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Hashing jobs admitted per hashing thread, running or waiting.
pub const QUEUE_PER_THREAD: usize = 16;

/// A job that has waited this long is taken by the normal-priority thread.
pub const RESCUE_AFTER: Duration = Duration::from_secs(1);

/// After a hash, the normal-priority thread rests this many times as long as it took.
const RESCUE_REST: u32 = 3;

/// The jobs waiting for a hashing thread, oldest first.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<(Instant, Job)>,
    closed: bool,
}

impl Queue {
    fn push(&self, job: Job) -> bool {
        let Ok(mut state) = self.state.lock() else { return false };
        if state.closed {
            return false;
        }
        state.jobs.push_back((Instant::now(), job));
        drop(state);
        self.changed.notify_all();
        true
    }

    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
        }
        self.changed.notify_all();
    }

    /// The next job, as soon as there is one; `None` once closed and empty.
    fn next(&self) -> Option<Job> {
        let mut state = self.state.lock().ok()?;
        loop {
            if let Some((_, job)) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.changed.wait(state).ok()?;
        }
    }

    /// The next job that has waited at least [`RESCUE_AFTER`]; `None` once closed and
    /// empty.
    fn next_aged(&self) -> Option<Job> {
        let mut state = self.state.lock().ok()?;
        loop {
            let wait = match state.jobs.front() {
                Some((queued, _)) => match RESCUE_AFTER.checked_sub(queued.elapsed()) {
                    None | Some(Duration::ZERO) => return state.jobs.pop_front().map(|(_, job)| job),
                    Some(left) => left,
                },
                None if state.closed => return None,
                None => Duration::from_secs(3600),
            };
            state = self.changed.wait_timeout(state, wait).ok()?.0;
        }
    }

    /// Waits `rest`, or less if the queue closes.
    fn rest(&self, rest: Duration) {
        let until = Instant::now() + rest;
        let Ok(mut state) = self.state.lock() else { return };
        while !state.closed {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { return };
            state = match self.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(_) => return,
            };
        }
    }
}

pub struct Passwords {
    cost: u32,
    /// Jobs admitted and not finished; at most `capacity`.
    admitted: AtomicUsize,
    capacity: usize,
    queue: Arc<Queue>,
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
        let queue = Arc::new(Queue::default());
        let mut workers = Vec::new();
        let start = |name: String, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(work).map_err(|e| HashError::Failed(format!("cannot start a hashing thread: {e}")))
        };
        for i in 0..(cores / 2).max(1) {
            let queue = queue.clone();
            workers.push(start(
                format!("cohort-bcrypt-{i}"),
                Box::new(move || {
                    if let Err(e) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
                        tracing::warn!(error = ?e, "could not lower the priority of a password-hashing thread");
                    }
                    while let Some(job) = queue.next() {
                        job();
                    }
                }),
            )?);
        }
        let capacity = QUEUE_PER_THREAD * workers.len();
        let rescue = queue.clone();
        workers.push(start(
            "cohort-bcrypt-aged".into(),
            Box::new(move || {
                while let Some(job) = rescue.next_aged() {
                    let started = Instant::now();
                    job();
                    rescue.rest(started.elapsed() * RESCUE_REST);
                }
            }),
        )?);
        let mut passwords =
            Passwords { cost, admitted: AtomicUsize::new(0), capacity, queue, workers: Mutex::new(workers), dummy_hash: String::new() };
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
        if !self.queue.push(job) {
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
        self.queue.close();
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

    /// The nice value of the calling thread (field 19 of /proc/thread-self/stat, after the
    /// command name, which is in parentheses and may contain spaces).
    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, rest)| rest.to_string()).unwrap_or_default();
        after.split_whitespace().nth(16).and_then(|n| n.parse::<i32>().ok()).unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_left_waiting_runs_at_normal_priority() {
        let p = Arc::new(Passwords::new(4).await.expect("hasher"));
        let own = nice();
        // Every low-priority thread busy for 4 s (as when other requests take the CPU).
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..p.capacity / QUEUE_PER_THREAD)
            .map(|_| {
                let (p, done) = (p.clone(), done.clone());
                tokio::spawn(async move {
                    p.run(move || {
                        std::thread::sleep(Duration::from_secs(4));
                        done.store(true, Ordering::SeqCst);
                        Ok(nice())
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let queued = Instant::now();
        let waited = p.run(|| Ok(nice())).await.expect("job");
        assert_eq!(waited, own, "the waiting job ran on the normal-priority thread");
        assert!(queued.elapsed() >= RESCUE_AFTER, "{:?}: it waited its turn first", queued.elapsed());
        assert!(!done.load(Ordering::SeqCst), "it did not wait for a low-priority thread to be free");
        for b in busy {
            assert_eq!(b.await.expect("task").expect("job"), 19);
        }
    }

    #[tokio::test]
    async fn hashing_runs_at_the_lowest_priority() {
        let p = Passwords::new(10).await.expect("hasher");
        // A job that waited past RESCUE_AFTER (a machine too loaded to wake the idle
        // thread in time) would run on the normal-priority thread: try until one did not.
        for _ in 0..5 {
            let (thread, nice) = p.run(|| Ok((std::thread::current().name().unwrap_or_default().to_string(), nice()))).await.expect("job");
            if thread != "cohort-bcrypt-aged" {
                assert_eq!(nice, 19, "{thread}");
                return;
            }
        }
        panic!("five jobs in a row waited past {RESCUE_AFTER:?} for an idle hashing thread");
    }
}
