//! The worker pool chaos and bench place their orders with: a number of workers take the
//! next index from one shared counter, each in its own task, until the counter says stop.
//! And how bench, soak and the history probes read the latencies they collect.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::task::JoinHandle;

/// The indices the workers share: `take` hands out the next one while `go_on` holds.
#[derive(Clone)]
pub(crate) struct Tickets {
    next: Arc<AtomicUsize>,
    go_on: Arc<dyn Fn(usize) -> bool + Send + Sync>,
}

impl Tickets {
    /// Every index of `range`, once.
    pub(crate) fn range(range: std::ops::Range<usize>) -> Self {
        let end = range.end;
        Self::from(range.start, move |i| i < end)
    }

    /// `first`, `first + 1`, ... while `go_on(i)` holds.
    pub(crate) fn from(
        first: usize,
        go_on: impl Fn(usize) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            next: Arc::new(AtomicUsize::new(first)),
            go_on: Arc::new(go_on),
        }
    }

    /// The next index, or `None` once there are no more (the refused index counts as
    /// taken: each worker takes one more than it places).
    pub(crate) fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        (self.go_on)(i).then_some(i)
    }

    /// How many indices were asked for so far, from 0.
    pub(crate) fn taken(&self) -> usize {
        self.next.load(Ordering::SeqCst)
    }
}

/// `concurrency` (at least one) workers, each a task.
pub(crate) struct Pool {
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts worker `w` for each `w` below `concurrency` as `worker(w, tickets)`; a
    /// worker loops `while let Some(i) = tickets.take()`.
    pub(crate) fn start<F, Fut>(concurrency: usize, tickets: &Tickets, worker: F) -> Self
    where
        F: Fn(usize, Tickets) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let workers = (0..concurrency.max(1))
            .map(|w| tokio::spawn(worker(w, tickets.clone())))
            .collect();
        Self { workers }
    }

    /// Whether every worker has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.workers.iter().all(JoinHandle::is_finished)
    }

    /// Waits until every worker has ended (a worker that panicked has ended too).
    pub(crate) async fn join(self) {
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// The `q` quantile (0..=1) of sorted latencies, nearest rank; zero when there are none.
pub(crate) fn percentile(sorted: &[std::time::Duration], q: f64) -> std::time::Duration {
    let i = (sorted.len().saturating_sub(1) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

pub(crate) fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
