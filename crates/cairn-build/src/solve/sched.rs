//! How stage threads share work: the RUN slots and the stages' results.

use std::sync::{Arc, Condvar, Mutex};

use super::StageResult;
use crate::error::{Error, Result};

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another stage thread must not hide this one's result.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many RUN processes may run at once: `CAIRN_MAX_PARALLELISM` when set to a positive number,
/// else no limit.
pub(super) fn max_parallel_runs() -> usize {
    std::env::var("CAIRN_MAX_PARALLELISM")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(usize::MAX)
}

/// A counting semaphore: limits concurrent RUN processes to [`max_parallel_runs`].
pub(super) struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

pub(super) struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    pub(super) fn new(n: usize) -> Self {
        Semaphore {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    pub(super) fn acquire(&self) -> Permit<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.cv.notify_one();
    }
}

/// Results of stages, filled in as they finish; readers block until theirs is there.
pub(super) struct Slots {
    results: Mutex<Vec<Option<Option<Arc<StageResult>>>>>,
    cv: Condvar,
}

impl Slots {
    pub(super) fn new(n: usize) -> Self {
        Slots {
            results: Mutex::new(vec![None; n]),
            cv: Condvar::new(),
        }
    }

    /// Records stage `pos`'s result (`None` if it failed) and wakes the waiters.
    pub(super) fn set(&self, pos: usize, result: Option<Arc<StageResult>>) {
        lock(&self.results)[pos] = Some(result);
        self.cv.notify_all();
    }

    pub(super) fn wait(&self, pos: usize) -> Result<Arc<StageResult>> {
        let mut results = lock(&self.results);
        loop {
            match &results[pos] {
                Some(Some(r)) => return Ok(r.clone()),
                Some(None) => return Err(Error::Cancelled),
                None => results = self.cv.wait(results).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::image::ImageConfig;
    use crate::key::CacheKey;

    #[test]
    fn semaphore_limits_concurrency() {
        let s = Semaphore::new(2);
        let running = std::sync::atomic::AtomicUsize::new(0);
        let max = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..6 {
                sc.spawn(|| {
                    let _p = s.acquire();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(max.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn slots_hand_results_to_waiters_and_propagate_failure() {
        let slots = Slots::new(2);
        std::thread::scope(|sc| {
            let h = sc.spawn(|| slots.wait(0).map(|r| r.content.clone()));
            std::thread::sleep(std::time::Duration::from_millis(10));
            slots.set(
                0,
                Some(Arc::new(StageResult {
                    config: ImageConfig::default(),
                    layers: vec![],
                    key: CacheKey::scratch(""),
                    content: "c".into(),
                })),
            );
            assert_eq!(h.join().unwrap().unwrap(), "c");
        });
        slots.set(1, None);
        assert!(matches!(slots.wait(1), Err(Error::Cancelled)));
    }
}
