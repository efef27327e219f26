//! A number of bytes shared by concurrent requests: what in-memory work (the plugin's
//! exports, which Orthanc 1.10.1 cannot stream) may hold at once, so that many at a time
//! cannot add up beyond what one may use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A shared allowance of bytes. Requests take from it through [`Reservation`]s, which
/// give their bytes back when dropped.
#[derive(Debug)]
pub struct ByteBudget {
    limit: u64,
    used: AtomicU64,
}

impl ByteBudget {
    pub fn new(limit: u64) -> Arc<ByteBudget> {
        Arc::new(ByteBudget { limit, used: AtomicU64::new(0) })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes currently held by all reservations.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// An empty reservation, grown as the work takes memory.
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), held: 0 }
    }
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    held: u64,
}

impl Reservation {
    /// Takes `bytes` more; `false`, with nothing taken, when the budget cannot spare them.
    #[must_use]
    pub fn grow(&mut self, bytes: u64) -> bool {
        let budget = &self.budget;
        let taken = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(bytes).filter(|&total| total <= budget.limit));
        if taken.is_ok() {
            self.held += bytes;
        }
        taken.is_ok()
    }

    pub fn held(&self) -> u64 {
        self.held
    }
}

/// A reservation kept alive with the answer it pays for (in the answer's extensions, so
/// the plugin holds it until Orthanc has sent the bytes).
#[derive(Clone, Debug)]
pub struct Held(pub Arc<Reservation>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_and_give_back_on_drop() {
        let budget = ByteBudget::new(100);
        let mut a = budget.reserve();
        let mut b = budget.reserve();
        assert!(a.grow(60));
        assert!(!b.grow(41), "60 + 41 is over 100");
        assert_eq!(b.held(), 0, "a refused growth takes nothing");
        assert!(b.grow(40));
        assert_eq!(budget.in_use(), 100);
        assert!(!a.grow(1));
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(b.grow(60));
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(!budget.reserve().grow(u64::MAX), "no overflow");
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let budget = ByteBudget::new(1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let mut r = budget.reserve();
                        for _ in 0..10 {
                            if r.grow(30) {
                                assert!(budget.in_use() <= budget.limit());
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(budget.in_use(), 0);
    }
}
