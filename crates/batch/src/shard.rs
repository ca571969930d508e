//! Which shard of a batch job an item belongs to: `--shard K/N`, or `auto/N` (and `auto`) with K from the
//! scheduler: Kubernetes' Indexed Job (`JOB_COMPLETION_INDEX`) or a SLURM job array (`SLURM_ARRAY_TASK_*`).
//! The partition is by item id, never by line number, so a resumed, re-ordered or re-split input sends every
//! item to the same shard again.

use std::fmt;

use sha2::{Digest, Sha256};

/// The environment variable an Indexed Job sets to each pod's completion index.
pub const JOB_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The variables a SLURM job array sets in each task, in the order [`SchedulerEnv::slurm`] holds them:
/// the task's id, the array's lowest id, its step, its task count and its highest id.
pub const SLURM_ARRAY_ENV: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MAX",
];

/// What the scheduler told this process about its place in a job: read from the environment once
/// ([`SchedulerEnv::from_env`]), built by hand in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerEnv {
    /// `JOB_COMPLETION_INDEX`, when set.
    pub job_index: Option<String>,
    /// The `SLURM_ARRAY_TASK_*` values, in [`SLURM_ARRAY_ENV`]'s order, each when set.
    pub slurm: [Option<String>; 5],
}

impl SchedulerEnv {
    /// The variables of this process's environment.
    pub fn from_env() -> SchedulerEnv {
        SchedulerEnv {
            job_index: std::env::var(JOB_INDEX_ENV).ok(),
            slurm: SLURM_ARRAY_ENV.map(|name| std::env::var(name).ok()),
        }
    }

    /// A SLURM array task's place: `(K, N)` where K is the task's rank among the array's ids (the id less
    /// the lowest, over the step) and N the task count. Only arrays whose ids are one arithmetic run
    /// (`0-15`, `1-16`, `0-30:2`, with or without a `%` throttle) map to shards; a list such as `1,3,8`
    /// would leave shards nobody scores, so it is refused.
    fn slurm_shard(&self) -> Result<Option<(u32, u32)>, String> {
        let [id, min, step, count, max] = &self.slurm;
        let Some(id) = id else { return Ok(None) };
        let num = |i: usize, v: &str| -> Result<u32, String> {
            v.trim().parse().map_err(|_| {
                format!(
                    "{}={v:?}: expected a non-negative integer",
                    SLURM_ARRAY_ENV[i]
                )
            })
        };
        let need = |i: usize, v: &Option<String>| -> Result<u32, String> {
            let v = v.as_deref().ok_or_else(|| {
                format!(
                    "{} is set but {} is not: not a SLURM array task this can map to a shard",
                    SLURM_ARRAY_ENV[0], SLURM_ARRAY_ENV[i]
                )
            })?;
            num(i, v)
        };
        let id = num(0, id)?;
        let min = need(1, min)?;
        let count = need(3, count)?;
        let step = match step {
            Some(s) => num(2, s)?,
            None => 1,
        };
        let max = max.as_deref().map(|m| num(4, m)).transpose()?;
        let uneven = || {
            format!(
                "SLURM array (ids {min}..{}, step {step}, {count} tasks, this task {id}) is not one \
                 evenly stepped run of ids, so its tasks cannot be numbered as shards 0..N-1; submit \
                 --array=0-{} (a %-throttle is fine)",
                max.map_or("?".to_string(), |m| m.to_string()),
                count.saturating_sub(1)
            )
        };
        if count == 0 || step == 0 || id < min || (id - min) % step != 0 {
            return Err(uneven());
        }
        let last = u64::from(min) + u64::from(count - 1) * u64::from(step);
        if max.is_some_and(|m| u64::from(m) != last) || u64::from(id) > last {
            return Err(uneven());
        }
        Ok(Some(((id - min) / step, count)))
    }
}

/// One shard of N: this process scores the items whose id hashes to `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: u32,
    pub count: u32,
}

impl ShardSpec {
    /// Parses `K/N` (0 ≤ K < N), `auto/N` or `auto`. With `auto`, K (and, for plain `auto`, N) comes from
    /// `env`: a SLURM array task's rank and the array's task count, or a Kubernetes Indexed Job's
    /// completion index (N then has to be written). `auto/N` in a SLURM array of another size is refused:
    /// shards would go unscored or be scored twice.
    pub fn parse(spec: &str, env: &SchedulerEnv) -> Result<ShardSpec, String> {
        let (k, n) = match spec.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None if spec == "auto" => (spec, None),
            None => {
                return Err(format!(
                    "--shard {spec:?}: expected K/N, auto/N or auto, e.g. 3/16"
                ));
            }
        };
        let count: Option<u32> = n
            .map(|n| {
                n.parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--shard {spec:?}: N must be a positive integer"))
            })
            .transpose()?;
        if k != "auto" {
            let count = count.expect("K/N has an N");
            let index: u32 = k.parse().map_err(|_| {
                format!("--shard {spec:?}: the shard index must be a non-negative integer")
            })?;
            return Self::checked(index, count, &format!("--shard {spec:?}"));
        }
        let slurm = env
            .slurm_shard()
            .map_err(|e| format!("--shard {spec:?}: {e}"))?;
        match (slurm, &env.job_index) {
            (Some(_), Some(_)) => Err(format!(
                "--shard {spec:?}: both {JOB_INDEX_ENV} and {} are set; write --shard K/N",
                SLURM_ARRAY_ENV[0]
            )),
            (Some((index, tasks)), None) => {
                if count.is_some_and(|n| n != tasks) {
                    return Err(format!(
                        "--shard {spec:?}: the SLURM array has {tasks} tasks ({}={tasks}), not {}; \
                         submit --array=0-{} or write --shard auto",
                        SLURM_ARRAY_ENV[3],
                        count.unwrap_or(0),
                        count.unwrap_or(1) - 1
                    ));
                }
                Self::checked(
                    index,
                    tasks,
                    &format!("--shard {spec:?} (SLURM array task)"),
                )
            }
            (None, Some(v)) => {
                let count = count.ok_or_else(|| {
                    format!(
                        "--shard {spec:?}: a Kubernetes Indexed Job does not say how many shards \
                         there are; write --shard auto/N"
                    )
                })?;
                let from = format!("{JOB_INDEX_ENV}={v:?}");
                let index: u32 = v.trim().parse().map_err(|_| {
                    format!("{from}: the shard index must be a non-negative integer")
                })?;
                Self::checked(index, count, &from)
            }
            (None, None) => Err(format!(
                "--shard {spec:?}: auto needs {} and {} (a SLURM job array) or {JOB_INDEX_ENV} \
                 (a Kubernetes Indexed Job)",
                SLURM_ARRAY_ENV[0], SLURM_ARRAY_ENV[3]
            )),
        }
    }

    /// `index` of `count`, refused when out of range (`from` says where the index came from).
    fn checked(index: u32, count: u32, from: &str) -> Result<ShardSpec, String> {
        if index >= count {
            return Err(format!(
                "{from}: shard index {index} is out of range for {count} shards (0..{})",
                count - 1
            ));
        }
        Ok(ShardSpec { index, count })
    }

    /// Whether the item with this id belongs to this shard.
    pub fn holds(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The id text a `score` input line is sharded by: its `id` (a string as it is, any other JSON value in
/// compact JSON, e.g. `42`), or its 1-based line number when it has none (or is not a JSON object: such a
/// line's error record goes to one shard too). Items without ids therefore move between shards when lines
/// are inserted or removed; give every line an `id` to make the partition survive edits of the input.
pub fn line_id(number: usize, text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut line)) => match line.remove("id") {
            Some(serde_json::Value::String(id)) => id,
            Some(serde_json::Value::Null) | None => number.to_string(),
            Some(other) => other.to_string(),
        },
        _ => number.to_string(),
    }
}

/// The shard of an item id among `count`: the first 8 bytes of SHA-256(id), big-endian, modulo `count`.
/// Written down so any tool can reproduce it (Python:
/// `int.from_bytes(hashlib.sha256(id.encode()).digest()[:8], "big") % count`).
pub fn shard_of(id: &str, count: u32) -> u32 {
    let digest = Sha256::digest(id.as_bytes());
    let head = u64::from_be_bytes(digest[..8].try_into().expect("32-byte digest"));
    (head % u64::from(count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s(index: &str) -> SchedulerEnv {
        SchedulerEnv {
            job_index: Some(index.to_string()),
            ..SchedulerEnv::default()
        }
    }

    /// A SLURM array task: id, min, step, count, max as SLURM sets them.
    fn slurm(vars: [&str; 5]) -> SchedulerEnv {
        SchedulerEnv {
            job_index: None,
            slurm: vars.map(|v| Some(v.to_string())),
        }
    }

    fn none() -> SchedulerEnv {
        SchedulerEnv::default()
    }

    fn shard(index: u32, count: u32) -> Result<ShardSpec, String> {
        Ok(ShardSpec { index, count })
    }

    #[test]
    fn parses_explicit_and_kubernetes_shards() {
        assert_eq!(ShardSpec::parse("3/16", &none()), shard(3, 16));
        assert_eq!(ShardSpec::parse("auto/4", &k8s("2")), shard(2, 4));
        assert_eq!(ShardSpec::parse("0/1", &none()).unwrap().to_string(), "0/1");
    }

    #[test]
    fn refuses_bad_shards_naming_what_is_wrong() {
        let err = |s, env: &SchedulerEnv| ShardSpec::parse(s, env).unwrap_err();
        assert!(err("3", &none()).contains("expected K/N"));
        assert!(err("1/0", &none()).contains("positive"));
        assert!(err("4/4", &none()).contains("out of range for 4 shards (0..3)"));
        assert!(err("-1/4", &none()).contains("non-negative"));
        assert!(err("auto/4", &none()).contains(JOB_INDEX_ENV));
        assert!(err("auto/4", &none()).contains("SLURM_ARRAY_TASK_ID"));
        assert!(err("auto/4", &k8s("7")).contains("JOB_COMPLETION_INDEX=\"7\""));
        assert!(err("auto", &k8s("1")).contains("write --shard auto/N"));
    }

    #[test]
    fn a_slurm_array_task_is_its_rank_among_the_array_ids() {
        // --array=0-15: ids are shards.
        assert_eq!(
            ShardSpec::parse("auto", &slurm(["5", "0", "1", "16", "15"])),
            shard(5, 16)
        );
        assert_eq!(
            ShardSpec::parse("auto/16", &slurm(["15", "0", "1", "16", "15"])),
            shard(15, 16)
        );
        // --array=1-8 (1-based ids) and --array=10-24:2 (a step; these are the values SLURM 22.05 sets in
        // its task 14): ranks, not ids.
        assert_eq!(
            ShardSpec::parse("auto", &slurm(["1", "1", "1", "8", "8"])),
            shard(0, 8)
        );
        assert_eq!(
            ShardSpec::parse("auto", &slurm(["8", "1", "1", "8", "8"])),
            shard(7, 8)
        );
        assert_eq!(
            ShardSpec::parse("auto/8", &slurm(["14", "10", "2", "8", "24"])),
            shard(2, 8)
        );
        // Without SLURM_ARRAY_TASK_STEP/MAX (older SLURM): step 1.
        let mut old = slurm(["3", "0", "", "4", ""]);
        old.slurm[2] = None;
        old.slurm[4] = None;
        assert_eq!(ShardSpec::parse("auto", &old), shard(3, 4));
    }

    #[test]
    fn slurm_arrays_that_are_not_one_even_run_are_refused() {
        let err = |s, v| ShardSpec::parse(s, &slurm(v)).unwrap_err();
        // --array=1,3,8: SLURM 22.05 sets MIN=1, STEP=1, COUNT=3, MAX=8 in each of its three tasks.
        for id in ["1", "3", "8"] {
            assert!(err("auto", [id, "1", "1", "3", "8"]).contains("not one evenly stepped run"));
        }
        assert!(err("auto", ["1", "1", "1", "3", "8"]).contains("--array=0-2"));
        // An id off the step.
        assert!(err("auto", ["3", "0", "2", "4", "6"]).contains("not one evenly stepped run"));
        // The array's size is not the N written.
        assert!(err("auto/8", ["2", "0", "1", "16", "15"]).contains("has 16 tasks"));
        // Garbage and half-set arrays name the variable.
        assert!(err("auto", ["x", "0", "1", "4", "3"]).contains("SLURM_ARRAY_TASK_ID=\"x\""));
        let mut half = slurm(["1", "0", "1", "4", "3"]);
        half.slurm[3] = None;
        assert!(
            ShardSpec::parse("auto", &half)
                .unwrap_err()
                .contains("SLURM_ARRAY_TASK_COUNT")
        );
        // Both schedulers at once: ambiguous.
        let mut both = slurm(["1", "0", "1", "4", "3"]);
        both.job_index = Some("1".into());
        assert!(
            ShardSpec::parse("auto", &both)
                .unwrap_err()
                .contains("both")
        );
    }

    #[test]
    fn the_partition_is_the_documented_hash() {
        // Expected values from Python's hashlib, as the doc comment writes it (an independent computation).
        assert_eq!(shard_of("item-42", 7), 2);
        assert_eq!(shard_of("item-42", 16), 7);
        assert_eq!(shard_of("item-42", 1000), 591);
        assert_eq!(shard_of("日本-1", 10), 0);
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[test]
    fn lines_are_known_by_their_id_else_their_number() {
        assert_eq!(line_id(7, r#"{"id": "item-42", "prompt": "a"}"#), "item-42");
        assert_eq!(line_id(7, r#"{"id": 42, "prompt": "a"}"#), "42");
        assert_eq!(line_id(7, r#"{"id": [1, "a"]}"#), r#"[1,"a"]"#);
        assert_eq!(line_id(7, r#"{"id": null, "prompt": "a"}"#), "7");
        assert_eq!(line_id(7, r#"{"prompt": "a"}"#), "7");
        assert_eq!(line_id(7, "not json"), "7");
        assert_eq!(line_id(7, "[1, 2]"), "7");
    }

    #[test]
    fn shards_cover_every_id_exactly_once_and_evenly() {
        let n = 8;
        let shards: Vec<ShardSpec> = (0..n).map(|k| ShardSpec { index: k, count: n }).collect();
        let mut sizes = vec![0usize; n as usize];
        for i in 0..8000 {
            let id = format!("prompt-{i}");
            let owners: Vec<_> = shards.iter().filter(|s| s.holds(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[owners[0].index as usize] += 1;
        }
        // 1000 expected per shard; a fair hash stays well within ±15%.
        assert!(sizes.iter().all(|&s| (850..1150).contains(&s)), "{sizes:?}");
    }
}
