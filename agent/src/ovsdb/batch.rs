//! Group commit for async side effects (the async sibling of the IPAM's group commit in
//! `ipam/commit.rs`): jobs submitted while a commit is running queue up, and the next commit
//! takes every job queued at that moment (a batch) in one all-or-nothing step.
//!
//! With one caller at a time every batch holds one job, so nothing waits for anything; under
//! concurrency the number of commits grows with the commit latency, not with the callers.
//!
//! Guarantees:
//! - One commit runs at a time; a job is in exactly one batch.
//! - A failed batch changed nothing ([`Committer::commit`] is all-or-nothing) and fails no
//!   caller by itself: each of its jobs is then run on its own ([`Committer::alone`]), so a
//!   bad job fails exactly its own caller and the others still succeed.
//! - A caller whose batch task is gone (runtime shut down, a panic) gets [`BatchGone`]; later
//!   callers start a new batch task.
//! - A job whose caller stopped waiting before its batch was taken is not committed; one whose
//!   caller left while its batch ran is handed to [`Committer::orphaned`] (to undo it) before
//!   the next batch starts.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Most jobs in one batch.
const MAX_BATCH: usize = 64;

/// What a [`GroupCommit`] commits.
pub trait Committer: Send + Sync + 'static {
    /// One caller's change.
    type Job: Clone + Send + Sync + 'static;
    /// What the caller gets back.
    type Output: Send + 'static;
    /// Why a whole batch failed (logged; the jobs are then run alone).
    type Error: std::fmt::Display + Send;

    /// Commits every job in one all-or-nothing step; on success one output per job, in order.
    fn commit(
        &self,
        jobs: &[Self::Job],
    ) -> impl Future<Output = Result<Vec<Self::Output>, Self::Error>> + Send;

    /// Commits one job on its own (its batch failed); its caller gets this.
    fn alone(&self, job: Self::Job) -> impl Future<Output = Self::Output> + Send;

    /// `job` was committed with `output` after its caller stopped waiting (an abandoned
    /// request): undo what it did, if anything. Runs before the next batch.
    fn orphaned(&self, job: &Self::Job, output: Self::Output) -> impl Future<Output = ()> + Send {
        let _ = (job, output);
        async {}
    }
}

/// The batch task ended before answering (runtime shut down or a panic in the committer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batch task ended before answering")]
pub struct BatchGone;

type Reply<C> = oneshot::Sender<<C as Committer>::Output>;

struct Queue<C: Committer> {
    pending: Vec<(C::Job, Reply<C>)>,
    /// A batch task is draining the queue.
    running: bool,
    /// Batches taken so far.
    batches: u64,
}

struct Inner<C: Committer> {
    committer: C,
    queue: Mutex<Queue<C>>,
}

impl<C: Committer> Inner<C> {
    fn lock(&self) -> MutexGuard<'_, Queue<C>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Group commit over a [`Committer`] (see the module docs). Cheap to clone.
pub struct GroupCommit<C: Committer> {
    inner: Arc<Inner<C>>,
}

impl<C: Committer> Clone for GroupCommit<C> {
    fn clone(&self) -> Self {
        GroupCommit {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Committer> std::fmt::Debug for GroupCommit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.inner.lock();
        f.debug_struct("GroupCommit")
            .field("pending", &queue.pending.len())
            .field("batches", &queue.batches)
            .finish()
    }
}

impl<C: Committer> GroupCommit<C> {
    /// Group commit over `committer`; batch tasks are spawned on the caller's tokio runtime.
    pub fn new(committer: C) -> Self {
        GroupCommit {
            inner: Arc::new(Inner {
                committer,
                queue: Mutex::new(Queue {
                    pending: Vec::new(),
                    running: false,
                    batches: 0,
                }),
            }),
        }
    }

    /// The committer.
    pub fn committer(&self) -> &C {
        &self.inner.committer
    }

    /// Batches taken so far (each is one [`Committer::commit`]).
    pub fn batches(&self) -> u64 {
        self.inner.lock().batches
    }

    /// Queues `job` and waits for the outcome of its batch (or of the job alone, if its batch
    /// failed). Must be called on a tokio runtime.
    pub async fn submit(&self, job: C::Job) -> Result<C::Output, BatchGone> {
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.inner.lock();
            queue.pending.push((job, tx));
            if !queue.running {
                queue.running = true;
                tokio::spawn(drain(Arc::clone(&self.inner)));
            }
        }
        rx.await.map_err(|_| BatchGone)
    }
}

/// Marks the queue idle when the batch task ends, also by panic or cancellation; jobs still
/// queued then are dropped (their callers get [`BatchGone`]).
struct Idle<C: Committer>(Arc<Inner<C>>);

impl<C: Committer> Drop for Idle<C> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        if queue.running {
            queue.running = false;
            queue.pending.clear();
        }
    }
}

/// The batch task: commits batches until the queue is empty.
async fn drain<C: Committer>(inner: Arc<Inner<C>>) {
    let idle = Idle(Arc::clone(&inner));
    loop {
        let batch: Vec<(C::Job, Reply<C>)> = {
            let mut queue = inner.lock();
            if queue.pending.is_empty() {
                queue.running = false;
                break;
            }
            let take = queue.pending.len().min(MAX_BATCH);
            queue.batches += 1;
            queue.pending.drain(..take).collect()
        };
        // A caller that stopped waiting (its request was abandoned) takes its job with it.
        let (jobs, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .filter(|(_, reply)| !reply.is_closed())
            .unzip();
        if jobs.is_empty() {
            continue;
        }
        match inner.committer.commit(&jobs).await {
            Ok(outputs) if outputs.len() == jobs.len() => {
                for ((job, reply), output) in jobs.iter().zip(replies).zip(outputs) {
                    // A caller that stopped waiting meanwhile: what its job did is undone.
                    if let Err(output) = reply.send(output) {
                        inner.committer.orphaned(job, output).await;
                    }
                }
            }
            outcome => {
                if let Err(e) = outcome {
                    tracing::debug!(jobs = jobs.len(), error = %e, "batch failed; running its jobs alone");
                }
                let inner = &inner;
                let alone = jobs
                    .into_iter()
                    .zip(replies)
                    .map(|(job, reply)| async move {
                        let output = inner.committer.alone(job.clone()).await;
                        if let Err(output) = reply.send(output) {
                            inner.committer.orphaned(&job, output).await;
                        }
                    });
                futures::future::join_all(alone).await;
            }
        }
    }
    drop(idle);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Jobs are numbers; a batch holding a negative one fails, alone a negative one fails.
    #[derive(Default)]
    struct Recorder {
        commits: AtomicU64,
        alone: AtomicU64,
        batch_sizes: Mutex<Vec<usize>>,
        committed: Mutex<Vec<i64>>,
        orphaned: Mutex<Vec<(i64, i64)>>,
    }

    impl Committer for Recorder {
        type Job = i64;
        type Output = Result<i64, String>;
        type Error = String;

        async fn commit(&self, jobs: &[i64]) -> Result<Vec<Self::Output>, String> {
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.batch_sizes.lock().unwrap().push(jobs.len());
            // Job 3 commits slowly, so its caller can leave in the middle.
            let ms = if jobs.contains(&3) { 300 } else { 50 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if let Some(bad) = jobs.iter().find(|j| **j < 0) {
                return Err(format!("job {bad} is bad"));
            }
            self.committed.lock().unwrap().extend(jobs);
            Ok(jobs.iter().map(|j| Ok(j * 10)).collect())
        }

        async fn orphaned(&self, job: &i64, output: Self::Output) {
            if let Ok(out) = output {
                self.orphaned.lock().unwrap().push((*job, out));
            }
        }

        async fn alone(&self, job: i64) -> Self::Output {
            self.alone.fetch_add(1, Ordering::SeqCst);
            if job < 0 {
                Err(format!("job {job} is bad"))
            } else {
                Ok(job * 10)
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_share_commits() {
        let group = GroupCommit::new(Recorder::default());
        let calls = (0..64).map(|i| {
            let group = group.clone();
            tokio::spawn(async move { group.submit(i).await })
        });
        let outputs = futures::future::join_all(calls).await;
        for (i, output) in outputs.into_iter().enumerate() {
            assert_eq!(output.unwrap(), Ok(Ok(i as i64 * 10)));
        }
        let commits = group.committer().commits.load(Ordering::SeqCst);
        assert!(commits < 16, "64 concurrent jobs took {commits} commits");
        assert_eq!(group.batches(), commits);
        assert_eq!(group.committer().alone.load(Ordering::SeqCst), 0);
        let sizes = group.committer().batch_sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 64, "{sizes:?}");
    }

    /// A caller that leaves before its batch is taken takes its job with it; one that leaves
    /// while its batch runs gets its committed job handed to `orphaned`, before the next batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_of_callers_that_left_are_skipped_or_orphaned() {
        let group = GroupCommit::new(Recorder::default());
        // 1 is committing (50 ms); 2 queues behind it and its caller leaves at once.
        let running = {
            let group = group.clone();
            tokio::spawn(async move { group.submit(1).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let left_early = tokio::time::timeout(Duration::from_millis(5), group.submit(2)).await;
        assert!(left_early.is_err(), "still queued");
        // 3's caller leaves while 3 is being committed (from ~50 ms to ~350 ms).
        let left_late = {
            let group = group.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(150), group.submit(3)).await
            })
        };
        assert_eq!(running.await.unwrap(), Ok(Ok(10)));
        assert!(left_late.await.unwrap().is_err(), "left during its commit");
        // A later job runs once the orphan was handled.
        assert_eq!(group.submit(4).await, Ok(Ok(40)));
        let recorder = group.committer();
        assert_eq!(
            *recorder.committed.lock().unwrap(),
            vec![1, 3, 4],
            "2 was never committed"
        );
        assert_eq!(*recorder.orphaned.lock().unwrap(), vec![(3, 30)]);
    }

    #[tokio::test]
    async fn one_caller_at_a_time_commits_each_job_once() {
        let group = GroupCommit::new(Recorder::default());
        for i in 0..3 {
            assert_eq!(group.submit(i).await, Ok(Ok(i * 10)));
        }
        assert_eq!(group.committer().commits.load(Ordering::SeqCst), 3);
        assert_eq!(
            *group.committer().batch_sizes.lock().unwrap(),
            vec![1, 1, 1]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_job_fails_only_its_caller() {
        let group = GroupCommit::new(Recorder::default());
        // Hold the first commit so the next ones queue into one batch with the bad job.
        let first = {
            let group = group.clone();
            tokio::spawn(async move { group.submit(100).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let calls = [1, -7, 3, 4].map(|i| {
            let group = group.clone();
            tokio::spawn(async move { group.submit(i).await })
        });
        let outputs: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|o| o.unwrap().unwrap())
            .collect();
        assert_eq!(first.await.unwrap(), Ok(Ok(1000)));
        assert_eq!(
            outputs,
            vec![Ok(10), Err("job -7 is bad".to_string()), Ok(30), Ok(40)]
        );
        let sizes = group.committer().batch_sizes.lock().unwrap().clone();
        assert_eq!(sizes, vec![1, 4], "the four queued jobs were one batch");
        assert_eq!(group.committer().alone.load(Ordering::SeqCst), 4);
        // The group still works afterwards.
        assert_eq!(group.submit(5).await, Ok(Ok(50)));
    }
}
