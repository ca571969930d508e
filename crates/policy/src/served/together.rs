//! One request under several policies: the local policies that share a model file are planned together, one
//! decode per distinct (token sequence, prompt/response split) serving every temperature asked of it, so p0 at
//! T = 0.5 and a hotter policy with the same rendered prompt cost one decode, not two. Each result has the
//! bits a request of its own would get (the same schedule, the same log-softmax per temperature). Remote
//! policies, and local ones alone on their model, are scored as they are one by one, all at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{
    ItemInput, LoadedModel, Policy, PreparedItem, ScoreError, ScoreOptions, Scored,
};
use crate::report::ItemReport;

use super::{
    ScoreRequest, Scores, ServeError, ServedPolicy, prepare_items, prepare_where_cheapest,
};

/// Scores each request under its policy, all at once; one result per request, in order.
pub async fn score_together(
    requests: Vec<(ServedPolicy, ScoreRequest)>,
) -> Vec<Result<Scores, ServeError>> {
    let runs = by_model(requests)
        .into_iter()
        .map(|(group, members)| async move {
            let results = if members.len() == 1 {
                let (policy, request) = members.into_iter().next().expect("one member");
                vec![policy.score(request).await]
            } else {
                score_on_one_model(members).await
            };
            group.into_iter().zip(results).collect::<Vec<_>>()
        });
    in_order(futures_util::future::join_all(runs).await)
}

/// The batch command's form of [`score_together`]: each item to its own result, so a failing item does not
/// take the others with it. Policies sharing a model are first tried together; a policy whose batch fails
/// there, and every policy alone on its model or remote, is scored by [`ServedPolicy::score_each`].
pub async fn score_each_together(
    requests: Vec<(ServedPolicy, Vec<ItemInput>, ScoreOptions)>,
    deadline: Instant,
) -> Vec<Vec<Result<ItemReport, ServeError>>> {
    let requests = requests
        .into_iter()
        .map(|(policy, items, options)| {
            let request = ScoreRequest {
                items,
                options,
                batch: true,
                deadline,
                body_bytes: 0,
            };
            (policy, request)
        })
        .collect();
    let runs = by_model(requests)
        .into_iter()
        .map(|(group, members)| async move {
            let tried = if members.len() == 1 {
                vec![None]
            } else {
                score_on_one_model(members.clone())
                    .await
                    .into_iter()
                    .map(Result::ok)
                    .collect()
            };
            let mut results = Vec::with_capacity(members.len());
            for ((policy, request), together) in members.into_iter().zip(tried) {
                results.push(match together {
                    Some(scores) => scores.items.into_iter().map(Ok).collect(),
                    None => {
                        policy
                            .score_each(request.items, &request.options, request.deadline)
                            .await
                    }
                });
            }
            group.into_iter().zip(results).collect::<Vec<_>>()
        });
    in_order(futures_util::future::join_all(runs).await)
}

/// A request under its policy.
type Member = (ServedPolicy, ScoreRequest);

/// Requests scored together, with their places among all the requests.
type Group = (Vec<usize>, Vec<Member>);

/// The requests grouped for scoring: those of local policies on one model (reading the same rows) together,
/// every other alone.
fn by_model(requests: Vec<Member>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, (policy, request)) in requests.into_iter().enumerate() {
        let joins = |(_, members): &&mut Group| match (&policy, &members[0]) {
            (ServedPolicy::Local(a), (ServedPolicy::Local(b), first)) => {
                Arc::ptr_eq(&a.model, &b.model) && request.options.rows() == first.options.rows()
            }
            _ => false,
        };
        match groups.iter_mut().find(joins) {
            Some((places, members)) => {
                places.push(i);
                members.push((policy, request));
            }
            None => groups.push((vec![i], vec![(policy, request)])),
        }
    }
    groups
}

/// Per-group results put back in the requests' order.
fn in_order<T>(groups: Vec<Vec<(usize, T)>>) -> Vec<T> {
    let mut all: Vec<(usize, T)> = groups.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// Where one policy's item is found among the shared decodes: the decode and the temperature's place in it.
#[derive(Clone, Copy)]
struct Slot {
    unit: usize,
    at: usize,
}

/// The distinct decodes of one model's requests, each with the distinct temperatures asked of it, and per
/// request (`None` where its items could not be prepared) where each item's result will be.
#[derive(Default)]
struct DecodePlan {
    units: Vec<(Arc<PreparedItem>, Vec<f64>)>,
    slots: Vec<Option<Vec<Slot>>>,
}

impl DecodePlan {
    /// Plans the prepared items of each request at that request's temperature: equal items (same tokens,
    /// split and end of turn) are one decode; equal temperatures (same bits) one result of it.
    fn new(prepared: &[Result<Vec<Arc<PreparedItem>>, ScoreError>], temperatures: &[f64]) -> Self {
        let mut plan = DecodePlan::default();
        let mut unit_of: HashMap<Arc<PreparedItem>, usize> = HashMap::new();
        for (items, &temperature) in prepared.iter().zip(temperatures) {
            let Ok(items) = items else {
                plan.slots.push(None);
                continue;
            };
            let found = items
                .iter()
                .map(|item| {
                    let unit = *unit_of.entry(item.clone()).or_insert_with(|| {
                        plan.units.push((item.clone(), Vec::new()));
                        plan.units.len() - 1
                    });
                    let asked = &mut plan.units[unit].1;
                    let at = asked
                        .iter()
                        .position(|t| t.to_bits() == temperature.to_bits())
                        .unwrap_or_else(|| {
                            asked.push(temperature);
                            asked.len() - 1
                        });
                    Slot { unit, at }
                })
                .collect();
            plan.slots.push(Some(found));
        }
        plan
    }
}

/// Local policies on one model, reading the same rows: each prepares its items (a policy whose items cannot
/// be prepared fails alone), equal prepared items become one decode with the distinct temperatures asked of
/// it, and each policy's reports are read from those decodes.
async fn score_on_one_model(members: Vec<Member>) -> Vec<Result<Scores, ServeError>> {
    let local: Vec<(Arc<Policy>, ScoreRequest)> = members
        .into_iter()
        .map(|(p, r)| match p {
            ServedPolicy::Local(policy) => (policy, r),
            ServedPolicy::Remote(_) => unreachable!("groups hold local policies only"),
        })
        .collect();
    let model: Arc<LoadedModel> = local[0].0.model.clone();
    let tokenize_started = Instant::now();
    let prepared = match prepare_all(&local).await {
        Ok(all) => all,
        Err(e) => return local.iter().map(|_| Err(e.clone().into())).collect(),
    };
    let tokenize = tokenize_started.elapsed();
    let temperatures: Vec<f64> = local.iter().map(|(_, r)| r.options.temperature).collect();
    let DecodePlan { units, slots } = DecodePlan::new(&prepared, &temperatures);
    let scored = if units.is_empty() {
        Ok(Vec::new())
    } else {
        model.score_shared(units, local[0].1.options.rows()).await
    };
    local
        .iter()
        .zip(prepared)
        .zip(slots)
        .map(|(((policy, request), items), slots)| {
            // A policy whose items could not be prepared has no slots: its own error comes first.
            let items = items?;
            let scored = scored
                .as_ref()
                .map_err(|e| e.clone().for_policy(&policy.name))?;
            let found = slots
                .expect("prepared items have slots")
                .into_iter()
                .map(|slot| &scored[slot.unit][slot.at]);
            Ok(report(policy, request, &items, found, tokenize))
        })
        .collect()
}

/// Every request's items prepared for its policy (where cheapest: see [`prepare_where_cheapest`]); the outer
/// error only when the preparation could not run at all.
async fn prepare_all(
    local: &[(Arc<Policy>, ScoreRequest)],
) -> Result<Vec<Result<Vec<Arc<PreparedItem>>, ScoreError>>, ScoreError> {
    let body_bytes = local.iter().map(|(_, r)| r.body_bytes).max().unwrap_or(0);
    let work: Vec<_> = local
        .iter()
        .map(|(policy, r)| {
            (
                policy.clone(),
                r.items.clone(),
                r.options,
                r.batch,
                r.deadline,
            )
        })
        .collect();
    prepare_where_cheapest(body_bytes, move || {
        Ok(work
            .iter()
            .map(|(policy, items, options, batch, deadline)| {
                prepare_items(policy, items, options, *batch, *deadline)
            })
            .collect())
    })
    .await
}

/// One policy's answer read from the shared decodes, with its stage times (a shared decode's compute counts
/// for each policy it served).
fn report<'a>(
    policy: &Policy,
    request: &ScoreRequest,
    items: &[Arc<PreparedItem>],
    found: impl Iterator<Item = &'a Scored>,
    tokenize: Duration,
) -> Scores {
    let mut queue = Duration::ZERO;
    let mut compute = Duration::ZERO;
    let reports = items
        .iter()
        .zip(found)
        .map(|(item, s)| {
            queue = queue.max(s.times.queue);
            compute += s.times.compute;
            ItemReport::local(
                item,
                &s.score,
                s.cached,
                &request.options,
                &policy.model.vocab,
                policy.system_fingerprint(),
            )
        })
        .collect();
    Scores {
        items: reports,
        stages: vec![
            ("tokenize", tokenize),
            ("queue", queue),
            ("compute", compute),
        ],
    }
}
