//! Work spread over the cores: the walk of a big context, its `lstat`s, and a copy's files.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The cores this process may use, asked once: the answer reads cgroup files.
pub(crate) fn available() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of every item, in item order, computed on up to `threads` threads (the caller's among
/// them), each taking the next `batch` items still to do.
///
/// It fails as a serial loop would: with the first failure in item order. A thread stops at its
/// failure and the others at their next batch; every batch before the failing one was taken
/// before it, so it has run. A panic on a thread is resumed on the caller's, as in a loop.
pub(crate) fn map<T, R, E>(
    items: &[T],
    threads: usize,
    batch: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let batch = batch.max(1);
    let threads = threads.min(items.len().div_ceil(batch));
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    // Per thread: the batches it finished (their first index, their results), and its failure.
    type Done<R, E> = (Vec<(usize, Vec<R>)>, Option<(usize, E)>);
    let work = || -> Done<R, E> {
        let mut done = Vec::new();
        loop {
            let at = next.fetch_add(batch, Ordering::Relaxed);
            let Some(mine) = items.get(at..items.len().min(at + batch)) else {
                return (done, None);
            };
            let mut out = Vec::with_capacity(mine.len());
            for (i, item) in mine.iter().enumerate() {
                match f(item) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        next.store(items.len(), Ordering::Relaxed);
                        return (done, Some((at + i, e)));
                    }
                }
            }
            done.push((at, out));
        }
    };
    let per_thread: Vec<Done<R, E>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mine = work();
        let mut all = vec![mine];
        for h in others {
            all.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    let mut batches = Vec::new();
    let mut first: Option<(usize, E)> = None;
    for (done, failed) in per_thread {
        batches.extend(done);
        if let Some((i, e)) = failed {
            if first.as_ref().is_none_or(|(j, _)| i < *j) {
                first = Some((i, e));
            }
        }
    }
    if let Some((_, e)) = first {
        return Err(e);
    }
    batches.sort_unstable_by_key(|(at, _)| *at);
    let mut results = Vec::with_capacity(items.len());
    for (_, out) in batches {
        results.extend(out);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_item_order_whatever_the_threads() {
        let items: Vec<u32> = (0..1000).collect();
        for (threads, batch) in [(1, 1), (2, 1), (2, 7), (3, 100), (8, 2000), (4, 0)] {
            let got = map(&items, threads, batch, |&x| Ok::<_, ()>(x * 2)).unwrap();
            assert_eq!(got, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        assert!(map(&[] as &[u32], 4, 3, |&x| Ok::<_, ()>(x))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_first_failure_in_item_order_wins() {
        let items: Vec<u32> = (0..5000).collect();
        for (threads, batch) in [(1, 1), (2, 1), (2, 13), (4, 50)] {
            let got = map(&items, threads, batch, |&x| {
                if x % 997 == 996 {
                    // The later failures come first in time on some threads.
                    Err(x)
                } else {
                    Ok(x)
                }
            });
            assert_eq!(got, Err(996), "threads {threads}, batch {batch}");
        }
    }

    #[test]
    fn every_item_runs_once_on_several_threads() {
        let runs: Vec<AtomicUsize> = (0..3000).map(|_| AtomicUsize::new(0)).collect();
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        map(&runs, 2, 10, |r| {
            r.fetch_add(1, Ordering::Relaxed);
            threads.lock().unwrap().insert(std::thread::current().id());
            // Long enough per batch that the other thread gets a turn.
            std::thread::sleep(std::time::Duration::from_micros(20));
            Ok::<_, ()>(())
        })
        .unwrap();
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        assert_eq!(threads.lock().unwrap().len(), 2);
    }
}
