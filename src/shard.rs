//! Which shard of a batch job an item belongs to: `--shard K/N`, or `auto/N` with K from Kubernetes' Indexed
//! Job (`JOB_COMPLETION_INDEX`). The partition is by item id, never by line number, so a resumed, re-ordered or
//! re-split input sends every item to the same shard again.

use std::fmt;

use sha2::{Digest, Sha256};

/// The environment variable an Indexed Job sets to each pod's completion index.
pub const JOB_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// One shard of N: this process scores the items whose id hashes to `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: u32,
    pub count: u32,
}

impl ShardSpec {
    /// Parses `K/N` (0 ≤ K < N) or `auto/N`, where K is read from `job_index` (the value of
    /// [`JOB_INDEX_ENV`], passed in so callers and tests choose where it comes from).
    pub fn parse(spec: &str, job_index: Option<&str>) -> Result<ShardSpec, String> {
        let (k, n) = spec
            .split_once('/')
            .ok_or_else(|| format!("--shard {spec:?}: expected K/N or auto/N, e.g. 3/16"))?;
        let count: u32 = n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--shard {spec:?}: N must be a positive integer"))?;
        let (index, from) = if k == "auto" {
            let v = job_index.ok_or_else(|| {
                format!(
                    "--shard {spec:?}: auto needs {JOB_INDEX_ENV} (set by a Kubernetes Indexed Job)"
                )
            })?;
            (v.trim().to_string(), format!("{JOB_INDEX_ENV}={v:?}"))
        } else {
            (k.to_string(), format!("--shard {spec:?}"))
        };
        let index: u32 = index
            .parse()
            .map_err(|_| format!("{from}: the shard index must be a non-negative integer"))?;
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

    #[test]
    fn parses_explicit_and_auto_shards() {
        assert_eq!(
            ShardSpec::parse("3/16", None),
            Ok(ShardSpec {
                index: 3,
                count: 16
            })
        );
        assert_eq!(
            ShardSpec::parse("auto/4", Some("2")),
            Ok(ShardSpec { index: 2, count: 4 })
        );
        assert_eq!(ShardSpec::parse("0/1", None).unwrap().to_string(), "0/1");
    }

    #[test]
    fn refuses_bad_shards_naming_what_is_wrong() {
        let err = |s, env| ShardSpec::parse(s, env).unwrap_err();
        assert!(err("3", None).contains("expected K/N"));
        assert!(err("1/0", None).contains("positive"));
        assert!(err("4/4", None).contains("out of range for 4 shards (0..3)"));
        assert!(err("-1/4", None).contains("non-negative"));
        assert!(err("auto/4", None).contains(JOB_INDEX_ENV));
        assert!(err("auto/4", Some("7")).contains("JOB_COMPLETION_INDEX=\"7\""));
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
