//! A model's bounded queue: admission (all of a request's work or none of it), the response cache in front of
//! the inference threads, and one decode per item for every temperature asked of it.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::super::cache::ScoreKey;
use super::super::error::ScoreError;
use super::super::generate::{GenEvent, GenerateJob, GenerateOptions};
use super::super::schedule::JobOptions;
use super::super::types::{ItemScore, PreparedItem, RowOptions, StageTimes};
use super::super::worker::{Job, Work};
use super::{LoadedModel, Scored};

impl LoadedModel {
    /// Scores every item, in order: cache hits at once, the rest queued (all or none: a batch whose
    /// misses do not fit is refused with `QueueFull`); with the response cache on, identical items in flight
    /// at once are computed once (without it, each is computed). Dropping the returned future abandons the
    /// items still queued.
    pub async fn score(
        &self,
        items: Vec<Arc<PreparedItem>>,
        options: JobOptions,
    ) -> Result<Vec<Scored>, ScoreError> {
        let units = items
            .into_iter()
            .map(|item| (item, vec![options.temperature]))
            .collect();
        let scored = self.score_shared(units, options.rows).await?;
        Ok(scored.into_iter().map(|mut at| at.remove(0)).collect())
    }

    /// Scores each item at each of its temperatures (one result per temperature, in order), the way
    /// [`LoadedModel::score`] scores one: cache hits at once, then one decode per item for all of its
    /// temperatures that missed, so policies sharing this model and a rendered prompt share the decode.
    /// Admission is all or none, one queue place per item decoded.
    pub async fn score_shared(
        &self,
        units: Vec<(Arc<PreparedItem>, Vec<f64>)>,
        rows: RowOptions,
    ) -> Result<Vec<Vec<Scored>>, ScoreError> {
        let mut results: Vec<Vec<Option<Scored>>> = Vec::with_capacity(units.len());
        for (item, temperatures) in &units {
            let mut found = Vec::with_capacity(temperatures.len());
            for &temperature in temperatures {
                let hit = match &self.cache {
                    Some(cache) => cache.get(&self.key(item, rows, temperature)).await,
                    None => None,
                };
                found.push(hit.map(|score| Scored {
                    score,
                    cached: true,
                    times: StageTimes::default(),
                }));
            }
            results.push(found);
        }
        // Per item with a miss, the indices of the temperatures still to compute.
        let misses: Vec<(usize, Vec<usize>)> = results
            .iter()
            .enumerate()
            .filter_map(|(u, found)| {
                let missing: Vec<usize> =
                    (0..found.len()).filter(|&j| found[j].is_none()).collect();
                (!missing.is_empty()).then_some((u, missing))
            })
            .collect();
        if !misses.is_empty() {
            let full = || self.queue_full();
            let mut permits = self
                .admission
                .clone()
                .try_acquire_many_owned(u32::try_from(misses.len()).map_err(|_| full())?)
                .map_err(|_| full())?;
            let runs = misses.iter().map(|(u, missing)| {
                let permit = permits.split(1).expect("one permit per item decoded");
                let (item, temperatures) = &units[*u];
                let wanted = missing.iter().map(|&j| temperatures[j]).collect();
                self.compute_missing(item.clone(), rows, wanted, permit)
            });
            let computed = futures_util::future::try_join_all(runs).await?;
            for ((u, missing), scored) in misses.into_iter().zip(computed) {
                for (j, one) in missing.into_iter().zip(scored) {
                    results[u][j] = Some(one);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|found| {
                found
                    .into_iter()
                    .map(|s| s.expect("every temperature scored"))
                    .collect()
            })
            .collect())
    }

    /// The response cache's key of one item at one temperature.
    fn key(&self, item: &PreparedItem, rows: RowOptions, temperature: f64) -> ScoreKey {
        ScoreKey::new(&self.identity, item, &JobOptions { rows, temperature })
    }

    /// Computes one item at the temperatures its cache lookups missed: a single one through the cache's
    /// in-flight sharing (identical requests at once compute it once), several from one decode whose results
    /// are then cached one by one.
    async fn compute_missing(
        &self,
        item: Arc<PreparedItem>,
        rows: RowOptions,
        temperatures: Vec<f64>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Vec<Scored>, ScoreError> {
        if let (&[temperature], Some(cache)) = (temperatures.as_slice(), &self.cache) {
            let key = self.key(&item, rows, temperature);
            let times = Mutex::new(StageTimes::default());
            let compute = async {
                let (mut scores, t) = self
                    .run_scoring_job(item, rows, temperatures, permit)
                    .await?;
                *times.lock().unwrap_or_else(|e| e.into_inner()) = t;
                Ok(scores.remove(0))
            };
            let (score, cached) = cache.get_or_compute(key, compute).await?;
            let times = times.into_inner().unwrap_or_else(|e| e.into_inner());
            return Ok(vec![Scored {
                score,
                cached,
                times,
            }]);
        }
        let (scores, times) = self
            .run_scoring_job(item.clone(), rows, temperatures.clone(), permit)
            .await?;
        let mut out = Vec::with_capacity(scores.len());
        for (score, &temperature) in scores.into_iter().zip(&temperatures) {
            let score = Arc::new(score);
            if let Some(cache) = &self.cache {
                cache
                    .insert(self.key(&item, rows, temperature), score.clone())
                    .await;
            }
            out.push(Scored {
                score,
                cached: false,
                times,
            });
        }
        Ok(out)
    }

    /// Sends one scoring job to the inference threads and waits for its answer (one score per temperature).
    async fn run_scoring_job(
        &self,
        item: Arc<PreparedItem>,
        options: RowOptions,
        temperatures: Vec<f64>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(Vec<ItemScore>, StageTimes), ScoreError> {
        let (reply, rx) = oneshot::channel();
        let work = Work::Score {
            item,
            options,
            temperatures,
            reply,
        };
        self.enqueue(work, permit).await?;
        rx.await.map_err(|_| {
            ScoreError::Unavailable("an inference thread stopped before answering".into())
        })?
    }

    /// Reserves `n` places in the queue at once, all or none (a request's generations fan out as one job
    /// per choice, so a request that does not fit whole is refused with `QueueFull` before any is queued).
    pub fn reserve(&self, n: usize) -> Result<Vec<QueuePlace>, ScoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let full = || self.queue_full();
        let mut permits = self
            .admission
            .clone()
            .try_acquire_many_owned(u32::try_from(n).map_err(|_| full())?)
            .map_err(|_| full())?;
        let mut places = Vec::with_capacity(n);
        for _ in 1..n {
            places.push(QueuePlace(permits.split(1).expect("one permit per place")));
        }
        places.push(QueuePlace(permits));
        Ok(places)
    }

    /// Queues one generation in a place reserved for it (see [`LoadedModel::reserve`]) and returns the
    /// stream of its events (tokens, then `Done` or `Error`). Dropping the receiver abandons the generation
    /// at its next token.
    pub async fn generate(
        &self,
        prompt: Arc<PreparedItem>,
        options: GenerateOptions,
        echo: bool,
        top_logprobs: usize,
        place: QueuePlace,
    ) -> Result<mpsc::Receiver<GenEvent>, ScoreError> {
        let (events, rx) = mpsc::channel(64);
        let work = Work::Generate(GenerateJob {
            prompt,
            options,
            echo,
            top_logprobs,
            events,
        });
        self.enqueue(work, place.0).await?;
        Ok(rx)
    }

    /// Hands admitted work to the inference threads (the permit travels with it and frees its queue slot
    /// when a thread takes the job, or when the job is dropped unqueued).
    async fn enqueue(
        &self,
        work: Work,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), ScoreError> {
        let job = Job {
            work,
            permit: Some(permit),
            enqueued: std::time::Instant::now(),
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| ScoreError::Unavailable("the inference threads have stopped".into()))
    }

    /// A full queue; [`crate::engine::Policy`] names the policy before the error leaves the engine.
    fn queue_full(&self) -> ScoreError {
        tracing::debug!(model = %self.info.path.display(), capacity = self.capacity, "queue full");
        ScoreError::QueueFull {
            policy: String::new(),
            capacity: self.capacity,
            retry_after_secs: 1,
        }
    }
}

/// One place in a model's bounded queue, reserved for a job not yet queued; dropped unused, it is given back.
pub struct QueuePlace(tokio::sync::OwnedSemaphorePermit);
