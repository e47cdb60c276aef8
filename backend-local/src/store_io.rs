//! [`IoPool`]: a fixed set of threads for one file store's blocking I/O.
//!
//! # Decision (docs/decisions/0126-journal-writers-wait-without-a-thread.md)
//! The file store used tokio's blocking pool, which starts a thread whenever a task finds none
//! idle and lets it go after 10 s of idleness: its size followed the bursts of the load (71–75
//! threads at 64 connections, one burst of audit writes after each shared fsync) and, in the
//! 30-minute soak, the machine's load (23 → 37 threads), and each thread kept its stack and its
//! allocator pages. A store has [`IO_THREADS`] threads of its own instead, started at open and
//! ended when the store is dropped, and its journal [`JOURNAL_IO_THREADS`] more: the server's
//! thread count does not move with load, and the threads tokio keeps for other work (DNS
//! lookups) cannot starve or be starved by the store's. Writers waiting for a journal fsync
//! wait asynchronously, holding none of them.
//!
//! A job that panics is caught (its caller sees the result channel closed, an internal error)
//! and the thread goes on with the next job, so the pool never shrinks.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex, PoisonError};

/// Threads per store for reads, the writes of record files (each with its fsyncs) and the
/// clean-ups after evictions and rolls. Jobs beyond them queue, in order: each is awaited by a
/// request in progress (or by a journaled write it started), so the queue is as long as the
/// store's work in progress, as tokio's blocking pool's was.
pub(crate) const IO_THREADS: usize = 4;

/// Threads of a store's journal (the audit history), apart from the others, so that no other
/// job of the store queues in front of its appends and fsyncs (review of cee6fee, F4): with
/// two, appends go on while a group fsync runs. (Not reserved: an fsync job can wait behind
/// appends, which are short. The clean-ups after an eviction or a roll run on the others.)
pub(crate) const JOURNAL_IO_THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The store's I/O threads; dropping it (with the store) ends them once their queue is empty.
pub(crate) struct IoPool {
    jobs: mpsc::Sender<Job>,
}

/// The job panicked (or never ran): its result is lost.
#[derive(Debug)]
pub(crate) struct Lost;

impl IoPool {
    /// Start `threads` threads (at least one).
    pub(crate) fn new(threads: usize) -> std::io::Result<IoPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name("vultrino-store-io".into())
                .spawn(move || serve(&queue))?;
        }
        Ok(IoPool { jobs })
    }

    /// Run `job` on one of the threads; dropped unrun only if every thread is gone, which
    /// does not happen while the pool exists (threads end when the channel closes).
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.jobs.send(Box::new(job));
    }

    /// Run `job` on one of the threads and wait (asynchronously) for its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Lost> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.spawn(move || {
            let _ = tx.send(job());
        });
        rx.await.map_err(|_| Lost)
    }
}

fn serve(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.recv()
        };
        let Ok(job) = job else {
            return;
        };
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a file store task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicking job loses its own result only; the pool goes on with the next job on its
    /// single thread, and jobs run in parallel on several.
    #[tokio::test]
    async fn a_panicking_job_loses_its_result_and_the_pool_goes_on() {
        let pool = IoPool::new(1).expect("pool");
        let lost = pool.run(|| -> u32 { panic!("injected") }).await;
        assert!(lost.is_err());
        assert_eq!(pool.run(|| 7).await.expect("ran"), 7);
        let pool = IoPool::new(2).expect("pool");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // The first job waits for the second: both must be running at once.
        let first = pool.run(move || rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok());
        let second = pool.run(move || tx.send(()).is_ok());
        let (first, second) = tokio::join!(first, second);
        assert!(first.expect("ran") && second.expect("ran"));
    }
}
