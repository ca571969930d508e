//! Configuration: server settings and the policies it serves, read from YAML and/or the command line.
//!
//! Everything is validated here, before any model is loaded, so that a bad config stops start-up with a
//! message that names the policy and the field instead of failing later inside llama.cpp.

use indexmap::IndexMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::{CacheSettings, EngineSettings, PolicySettings};
use crate::remote::{ApiKey, Provider, RemoteSettings};
use crate::request_policy::check_temperature;
use crate::served::{RemotePolicySettings, ServedSettings};
use crate::server::{HttpSettings, ServerSettings};

/// Default decode chunk (llama.cpp `n_batch` = `n_ubatch`). Part of the decode schedule, so it changes numbers.
pub const DEFAULT_DECODE_CHUNK: u32 = 512;

/// A configuration error, always naming where the problem is (policy and field, or the file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The YAML file as written by the user (`policies:` plus an optional `server:` section).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    cache: CacheSection,
    policies: IndexMap<String, PolicyEntry>,
}

/// The response cache as written in YAML (`cache:`); the command line overrides each field.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Byte budget of cached scores; 0 turns the cache off.
    pub max_bytes: Option<u64>,
    /// Seconds after which an entry expires (none: entries live until evicted).
    pub ttl_seconds: Option<u64>,
}

/// Server settings that may come from YAML; the command line overrides each one.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// CPU threads for inference, divided between the inference threads of all models.
    pub threads: Option<usize>,
    /// Items that may wait in one model's queue before requests are refused with 429.
    pub queue_size: Option<usize>,
    /// Largest `items` list a single request may carry.
    pub max_batch_items: Option<usize>,
    /// Decode chunk in tokens; fixed per server so that numbers do not depend on load (`batch_size`, its
    /// old name, is still read).
    #[serde(alias = "batch_size")]
    pub decode_chunk: Option<u32>,
    /// Inference threads (llama.cpp contexts) per model; CPU threads are divided between all of them.
    pub parallel: Option<usize>,
    /// Byte budget per model of the prefix cache (saved states of whole prompts); 0 turns it off.
    pub prefix_cache_bytes: Option<u64>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Seconds a request may take before it is answered 504 and its queued work dropped.
    pub request_timeout_secs: Option<u64>,
    /// Requests handled at once; more get 503.
    pub max_concurrent_requests: Option<usize>,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    pub shutdown_timeout_secs: Option<u64>,
    /// Bearer keys clients must send; none = no authentication. Also read from LLAMA_SCORER_API_KEYS.
    pub api_keys: Option<Vec<String>>,
    /// Browser origins (`scheme://host[:port]`) that may call the server besides its own page; requests
    /// from any other `Origin` get 403.
    pub allowed_origins: Option<Vec<String>>,
    /// Map model files into memory (llama.cpp's default) rather than read them into it.
    pub mmap: Option<bool>,
    /// Seconds a request head may take to arrive once it has started; slower connections are closed.
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a keep-alive connection may wait for its next request before it is closed.
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a request body may take to arrive; slower uploads get 408.
    pub body_timeout_secs: Option<u64>,
    /// Connections open at once (kept under the open-files limit); when full, the longest-waiting
    /// unanswered connection is closed, else newcomers get 503.
    pub max_connections: Option<usize>,
    /// `Host` names answered when bound to a loopback address besides the loopback names (`*`: any).
    pub allowed_hosts: Option<Vec<String>>,
}

/// One policy as written in YAML (the seed experiment's shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    provider: Option<String>,
    model: String,
    /// Remote providers: the API root (Fireworks has a default).
    base_url: Option<String>,
    /// Remote providers: the environment variable holding the upstream's API key (`""`: send none).
    api_key_env: Option<String>,
    timeout_secs: Option<u64>,
    max_retries: Option<u32>,
    max_concurrency: Option<usize>,
    /// Remote providers: the largest upstream answer read, in bytes (default 64 MiB).
    max_answer_bytes: Option<usize>,
    temperature: Option<f64>,
    seed: Option<u64>,
    n_ctx: Option<u32>,
    n_gpu_layers: Option<i32>,
    system_prompt: Option<String>,
    /// Jinja chat template that replaces the GGUF's own `tokenizer.chat_template`.
    chat_template: Option<String>,
}

/// A validated policy (the engine's own type: config validates, the engine consumes).
pub type PolicyConfig = PolicySettings;

/// Everything a run needs: the HTTP front's settings, the engine's and the policies.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen, and the HTTP layer's limits and access rules.
    pub http: HttpSettings,
    pub threads: usize,
    pub queue_size: usize,
    /// Decode chunk in tokens (see [`ServerSection::decode_chunk`]).
    pub decode_chunk: u32,
    pub parallel: usize,
    pub prefix_cache_bytes: u64,
    /// Model files are mapped into memory (shared with the page cache; a file truncated in place while in
    /// use kills the process with SIGBUS) rather than read into it.
    pub mmap: bool,
    pub cache: CacheSettings,
    /// The policies scored by this process's engine.
    pub policies: Vec<PolicyConfig>,
    /// The policies scored through another server's API.
    pub remote_policies: Vec<RemotePolicySettings>,
    /// Every policy's name, in the configuration's order (how `/v1/models` and `score` list them).
    pub policy_order: Vec<String>,
}

/// Default largest request body: 256 items of 32 KB each.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

/// Default byte budget per model of the prefix cache.
pub const DEFAULT_PREFIX_CACHE_BYTES: u64 = 256 << 20;

/// Default byte budget of the response cache.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// Command-line values that override the file (each `None` keeps the file's value or the default).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub server: ServerSection,
    pub cache: CacheSection,
    /// Score every policy through this running llama-scorer (or a balancer in front of several) instead of
    /// loading its model: `score --server URL`.
    pub through: Option<ThroughServer>,
}

/// `score --server`: where the policies are served, and how hard to lean on it.
#[derive(Debug, Clone)]
pub struct ThroughServer {
    /// The server's root URL, e.g. `http://scorer:8080`.
    pub url: String,
    /// Upstream calls in flight per policy.
    pub concurrency: usize,
    /// Retries per call (connection errors, 5xx, 429/503 after `Retry-After`): a replica that dies
    /// mid-run costs retries, which the balancer sends to another.
    pub max_retries: u32,
    /// The server's API key, if it wants one.
    pub api_key: Option<String>,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get())
}

impl Config {
    /// The engine's share of the configuration, in the engine's own types.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            threads: self.threads,
            parallel: self.parallel,
            queue_size: self.queue_size,
            decode_chunk: self.decode_chunk,
            prefix_cache_bytes: self.prefix_cache_bytes,
            mmap: self.mmap,
            cache: self.cache,
            policies: self.policies.clone(),
        }
    }

    /// The HTTP server's settings: where to listen, what to serve and every limit.
    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            http: self.http.clone(),
            served: self.served_settings(),
        }
    }

    /// What the front ends serve: the engine's settings, the remote policies and the policies' order.
    pub fn served_settings(&self) -> ServedSettings {
        ServedSettings {
            engine: self.engine_settings(),
            remotes: self.remote_policies.clone(),
            order: self.policy_order.clone(),
        }
    }

    /// Reads and validates a YAML config file; relative model paths resolve against the file's folder.
    pub fn from_file(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut text = String::new();
        fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| err(format!("cannot read config file {}: {e}", path.display())))?;
        let file: ConfigFile = serde_yaml_ng::from_str(&text)
            .map_err(|e| err(format!("invalid config file {}: {e}", path.display())))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if file.policies.is_empty() {
            return Err(err(format!(
                "config file {}: `policies` is empty; define at least one policy",
                path.display()
            )));
        }
        let mut policies = Vec::new();
        let mut remotes = Vec::new();
        let mut order = Vec::new();
        for (name, entry) in file.policies {
            order.push(name.clone());
            if let Some(through) = &overrides.through {
                remotes.push(through_server(&name, &entry, through)?);
                continue;
            }
            match validate_policy(&name, entry, &base)? {
                Validated::Local(p) => policies.push(p),
                Validated::Remote(r) => remotes.push(*r),
            }
        }
        let mut cfg = Self::assemble(file.server, file.cache, overrides, policies)?;
        cfg.remote_policies = remotes;
        cfg.policy_order = order;
        Ok(cfg)
    }

    /// Every server setting at its default, serving `policies` (the base that files and flags override; the
    /// one place the defaults are written).
    pub fn with_defaults(policies: Vec<PolicyConfig>) -> Config {
        Self::assemble(
            ServerSection::default(),
            CacheSection::default(),
            &Overrides::default(),
            policies,
        )
        .expect("the defaults are valid")
    }

    /// A single-policy configuration for `serve --model FILE`, the policy named `alias`.
    pub fn single_model(
        model: &Path,
        alias: Option<&str>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let name = match alias {
            Some(a) => a.to_string(),
            None => model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| err(format!("--model {}: not a file name", model.display())))?,
        };
        let entry = PolicyEntry {
            provider: None,
            model: model.to_string_lossy().into_owned(),
            base_url: None,
            api_key_env: None,
            timeout_secs: None,
            max_retries: None,
            max_concurrency: None,
            max_answer_bytes: None,
            temperature: None,
            seed: None,
            n_ctx: None,
            n_gpu_layers: None,
            system_prompt: None,
            chat_template: None,
        };
        let cwd = std::env::current_dir().map_err(|e| err(format!("current directory: {e}")))?;
        let Validated::Local(policy) = validate_policy(&name, entry, &cwd)? else {
            unreachable!("a policy without a provider is local")
        };
        Self::assemble(
            ServerSection::default(),
            CacheSection::default(),
            overrides,
            vec![policy],
        )
    }

    fn assemble(
        file: ServerSection,
        cache: CacheSection,
        overrides: &Overrides,
        policies: Vec<PolicyConfig>,
    ) -> Result<Config, ConfigError> {
        let o = &overrides.server;
        let cfg = Config {
            http: HttpSettings {
                host: o
                    .host
                    .clone()
                    .or(file.host)
                    .unwrap_or_else(|| "127.0.0.1".into()),
                port: o.port.or(file.port).unwrap_or(8080),
                max_batch_items: o.max_batch_items.or(file.max_batch_items).unwrap_or(256),
                max_body_bytes: o
                    .max_body_bytes
                    .or(file.max_body_bytes)
                    .unwrap_or(DEFAULT_MAX_BODY_BYTES),
                request_timeout_secs: o
                    .request_timeout_secs
                    .or(file.request_timeout_secs)
                    .unwrap_or(600),
                max_concurrent_requests: o
                    .max_concurrent_requests
                    .or(file.max_concurrent_requests)
                    .unwrap_or(1024),
                shutdown_timeout_secs: o
                    .shutdown_timeout_secs
                    .or(file.shutdown_timeout_secs)
                    .unwrap_or(30),
                api_keys: o.api_keys.clone().or(file.api_keys).unwrap_or_default(),
                allowed_origins: o
                    .allowed_origins
                    .clone()
                    .or(file.allowed_origins)
                    .unwrap_or_default(),
                header_read_timeout_secs: o
                    .header_read_timeout_secs
                    .or(file.header_read_timeout_secs)
                    .unwrap_or(30),
                idle_timeout_secs: o.idle_timeout_secs.or(file.idle_timeout_secs).unwrap_or(75),
                body_timeout_secs: o.body_timeout_secs.or(file.body_timeout_secs).unwrap_or(60),
                max_connections: o.max_connections.or(file.max_connections).unwrap_or(1024),
                allowed_hosts: o
                    .allowed_hosts
                    .clone()
                    .or(file.allowed_hosts)
                    .unwrap_or_default(),
            },
            threads: o.threads.or(file.threads).unwrap_or_else(default_threads),
            queue_size: o.queue_size.or(file.queue_size).unwrap_or(1024),
            decode_chunk: o
                .decode_chunk
                .or(file.decode_chunk)
                .unwrap_or(DEFAULT_DECODE_CHUNK),
            parallel: o.parallel.or(file.parallel).unwrap_or(1),
            prefix_cache_bytes: o
                .prefix_cache_bytes
                .or(file.prefix_cache_bytes)
                .unwrap_or(DEFAULT_PREFIX_CACHE_BYTES),
            mmap: o.mmap.or(file.mmap).unwrap_or(true),
            cache: CacheSettings {
                max_bytes: overrides
                    .cache
                    .max_bytes
                    .or(cache.max_bytes)
                    .unwrap_or(DEFAULT_CACHE_BYTES),
                ttl: overrides
                    .cache
                    .ttl_seconds
                    .or(cache.ttl_seconds)
                    .map(std::time::Duration::from_secs),
            },
            policy_order: policies.iter().map(|p| p.name.clone()).collect(),
            policies,
            remote_policies: Vec::new(),
        };
        cfg.check_server()?;
        Ok(cfg)
    }

    fn check_server(&self) -> Result<(), ConfigError> {
        if self.threads == 0 {
            return Err(err("server.threads must be at least 1"));
        }
        if self.queue_size == 0 {
            return Err(err("server.queue_size must be at least 1"));
        }
        if self.http.request_timeout_secs == 0 {
            return Err(err("server.request_timeout_secs must be at least 1"));
        }
        if self.http.max_concurrent_requests == 0 {
            return Err(err("server.max_concurrent_requests must be at least 1"));
        }
        for (name, v) in [
            (
                "header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            ("idle_timeout_secs", self.http.idle_timeout_secs),
            ("body_timeout_secs", self.http.body_timeout_secs),
            ("max_connections", self.http.max_connections as u64),
        ] {
            if v == 0 {
                return Err(err(format!("server.{name} must be at least 1")));
            }
        }
        if let Some(h) = self
            .http
            .allowed_hosts
            .iter()
            .find(|h| h.trim().is_empty() || h.contains(['/', ' ', '@']))
        {
            return Err(err(format!(
                "server.allowed_hosts: `{h}` is not a host name; write a name or address as clients \
                 send it in `Host` (without the port), or `*` to answer any"
            )));
        }
        if !(1..=64).contains(&self.parallel) {
            return Err(err("server.parallel must be between 1 and 64"));
        }
        if self.cache.ttl.is_some_and(|t| t.is_zero()) {
            return Err(err(
                "cache.ttl_seconds must be at least 1 (omit it for no expiry)",
            ));
        }
        if self.http.max_batch_items == 0 {
            return Err(err("server.max_batch_items must be at least 1"));
        }
        if self.http.max_batch_items > self.queue_size {
            return Err(err(format!(
                "server.max_batch_items ({}) exceeds server.queue_size ({}): such a batch could never be queued",
                self.http.max_batch_items, self.queue_size
            )));
        }
        if self.http.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(err("server.api_keys: keys must not be empty"));
        }
        if let Some(o) = self
            .http
            .allowed_origins
            .iter()
            .find(|o| crate::request_policy::normalize_origin(o).is_none())
        {
            return Err(err(format!(
                "server.allowed_origins: `{o}` is not an origin; write scheme://host[:port] \
                 (http or https, no path)"
            )));
        }
        if !(1..=65536).contains(&self.decode_chunk) {
            return Err(err("server.decode_chunk must be between 1 and 65536"));
        }
        // Policies that share a file share one loaded model, so load-time options must agree.
        for (i, a) in self.policies.iter().enumerate() {
            for b in &self.policies[..i] {
                if a.model_path == b.model_path && a.n_gpu_layers != b.n_gpu_layers {
                    return Err(err(format!(
                        "policies.{}.n_gpu_layers ({}) differs from policies.{}.n_gpu_layers ({}); \
                         both use {} and share one loaded model",
                        a.name,
                        a.n_gpu_layers,
                        b.name,
                        b.n_gpu_layers,
                        a.model_path.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `Server::start(config)`: a validated configuration is the server's settings.
impl From<Config> for ServerSettings {
    fn from(cfg: Config) -> ServerSettings {
        cfg.server_settings()
    }
}

fn expand_home(raw: &str) -> Result<PathBuf, String> {
    expand_home_in(raw, std::env::var_os("HOME"))
}

/// `~` and `~/…` of `raw` under `home` (the value of HOME, read by the caller).
fn expand_home_in(raw: &str, home: Option<std::ffi::OsString>) -> Result<PathBuf, String> {
    if raw == "~" || raw.starts_with("~/") {
        let home = home.ok_or("`~` used but HOME is not set")?;
        let rest = raw.trim_start_matches('~').trim_start_matches('/');
        return Ok(PathBuf::from(home).join(rest));
    }
    Ok(PathBuf::from(raw))
}

/// Checks that `path` is a readable GGUF file that this build's llama.cpp can load (header, tensor
/// extents, architecture: see [`crate::gguf::check`]), returning its canonical path.
pub fn check_gguf(path: &Path) -> Result<PathBuf, String> {
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !canonical.is_file() {
        return Err(format!("{} is not a file", canonical.display()));
    }
    crate::gguf::check(&canonical).map_err(|e| format!("{}: {e}", canonical.display()))?;
    Ok(canonical)
}

/// A policy from the file: scored here, or through a remote API.
enum Validated {
    Local(PolicyConfig),
    Remote(Box<RemotePolicySettings>),
}

/// The provider of policies scored by this process's engine (also a policy without `provider`); every
/// other provider is a remote one (see [`crate::remote::providers`]).
const LOCAL_PROVIDER: &str = "llama_cpp";

fn validate_policy(name: &str, e: PolicyEntry, base: &Path) -> Result<Validated, ConfigError> {
    let field = |f: &str, msg: String| policy_field(name, f, msg);
    if name.is_empty() {
        return Err(err("policies: a policy name may not be empty"));
    }
    let provider = match e.provider.as_deref() {
        None | Some(LOCAL_PROVIDER) => None,
        Some(p) => Some(Provider::named(p).ok_or_else(|| {
            field(
                "provider",
                format!(
                    "unknown provider `{p}`; the providers are {LOCAL_PROVIDER}, {}",
                    Provider::names()
                ),
            )
        })?),
    };
    let temperature = e.temperature.unwrap_or(1.0);
    check_temperature(temperature).map_err(|m| field("temperature", m))?;
    if let Some(provider) = provider {
        return validate_remote(name, provider, e, temperature)
            .map(|r| Validated::Remote(Box::new(r)));
    }
    let remote_only = [
        ("base_url", e.base_url.is_some()),
        ("api_key_env", e.api_key_env.is_some()),
        ("timeout_secs", e.timeout_secs.is_some()),
        ("max_retries", e.max_retries.is_some()),
        ("max_concurrency", e.max_concurrency.is_some()),
        ("max_answer_bytes", e.max_answer_bytes.is_some()),
    ];
    if let Some((f, _)) = remote_only.iter().find(|(_, set)| *set) {
        return Err(field(
            f,
            format!(
                "applies to remote providers only ({}); this policy is {LOCAL_PROVIDER}",
                Provider::names()
            ),
        ));
    }
    let raw = expand_home(&e.model).map_err(|m| field("model", m))?;
    let path = if raw.is_absolute() {
        raw
    } else {
        base.join(raw)
    };
    let model_path = check_gguf(&path).map_err(|m| field("model", m))?;
    if let Some(n) = e.n_ctx
        && n < 8
    {
        return Err(field("n_ctx", format!("must be at least 8, got {n}")));
    }
    let n_gpu_layers = e.n_gpu_layers.unwrap_or(-1);
    if n_gpu_layers < -1 {
        return Err(field(
            "n_gpu_layers",
            format!("must be -1 (all layers) or a layer count, got {n_gpu_layers}"),
        ));
    }
    Ok(Validated::Local(PolicyConfig {
        name: name.to_string(),
        model_path,
        temperature,
        seed: e.seed,
        n_ctx: e.n_ctx,
        n_gpu_layers,
        system_prompt: e.system_prompt,
        chat_template: e.chat_template,
    }))
}

/// The policy `name` of a config file, scored through a running llama-scorer serving that same file: its
/// model is not loaded here (nor checked: the job's machine need not hold it); the server applies the
/// template, system prompt and context, and the policy's temperature is sent with every request.
fn through_server(
    name: &str,
    entry: &PolicyEntry,
    through: &ThroughServer,
) -> Result<RemotePolicySettings, ConfigError> {
    let temperature = entry.temperature.unwrap_or(1.0);
    check_temperature(temperature).map_err(|m| err(format!("policies.{name}.temperature: {m}")))?;
    let mut remote = RemoteSettings::new(name, Provider::llama_scorer(), name);
    remote.base_url = Some(through.url.clone());
    remote.api_key = through.api_key.clone().map(ApiKey::new);
    remote.max_concurrency = through.concurrency;
    remote.max_retries = through.max_retries;
    remote.timeout = std::time::Duration::from_secs(600);
    remote
        .validate()
        .map_err(|m| err(format!("--server: {m}")))?;
    Ok(RemotePolicySettings {
        remote,
        temperature,
        seed: None,
        system_prompt: None,
        chat_template: None,
    })
}

/// A remote policy: where, as which model, with which key (read from the environment now, so a missing
/// variable stops start-up) and limits.
fn validate_remote(
    name: &str,
    provider: Provider,
    e: PolicyEntry,
    temperature: f64,
) -> Result<RemotePolicySettings, ConfigError> {
    reject_local_only_fields(name, provider, &e)?;
    let api_key = remote_api_key(name, provider, e.api_key_env.as_deref())?;
    let mut remote = RemoteSettings::new(name, provider, e.model);
    remote.base_url = e.base_url;
    remote.api_key = api_key;
    if let Some(t) = e.timeout_secs {
        remote.timeout = std::time::Duration::from_secs(t);
    }
    if let Some(r) = e.max_retries {
        remote.max_retries = r;
    }
    if let Some(c) = e.max_concurrency {
        remote.max_concurrency = c;
    }
    if let Some(b) = e.max_answer_bytes {
        remote.max_answer_bytes = b;
    }
    remote
        .validate()
        .map_err(|m| remote_settings_error(name, &m))?;
    Ok(RemotePolicySettings {
        remote,
        temperature,
        seed: e.seed,
        system_prompt: e.system_prompt,
        chat_template: e.chat_template,
    })
}

/// An error in field `f` of policy `name`, named as the file writes it.
fn policy_field(name: &str, f: &str, msg: String) -> ConfigError {
    err(format!("policies.{name}.{f}: {msg}"))
}

/// Fields a remote policy cannot honour, refused rather than silently ignored: the context and layers are
/// the upstream's, and an upstream that renders messages does so with its own template and system prompt.
fn reject_local_only_fields(
    name: &str,
    provider: Provider,
    e: &PolicyEntry,
) -> Result<(), ConfigError> {
    let local_only = [
        ("n_ctx", e.n_ctx.is_some()),
        ("n_gpu_layers", e.n_gpu_layers.is_some()),
    ];
    if let Some((f, _)) = local_only.iter().find(|(_, set)| *set) {
        return Err(policy_field(
            name,
            f,
            format!("applies to {LOCAL_PROVIDER} policies only; this policy is {provider}"),
        ));
    }
    if provider.renders_messages() {
        for (f, set) in [
            ("chat_template", e.chat_template.is_some()),
            ("system_prompt", e.system_prompt.is_some()),
        ] {
            if set {
                return Err(policy_field(
                    name,
                    f,
                    format!(
                        "a {provider} remote renders messages with its own policy's template and \
                         system prompt; set it there"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The key sent upstream, from `api_key_env` (else the provider's usual variable; `""` for none). Read
/// at start-up so a missing key stops the server instead of failing every request.
fn remote_api_key(
    name: &str,
    provider: Provider,
    api_key_env: Option<&str>,
) -> Result<Option<ApiKey>, ConfigError> {
    let env_name = match api_key_env {
        Some("") => None,
        Some(n) => Some(n),
        None => provider.default_key_env(),
    };
    let Some(var) = env_name else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => Ok(Some(ApiKey::new(key.trim()))),
        _ => Err(policy_field(
            name,
            "api_key_env",
            format!(
                "the environment variable `{var}` holding the {provider} API key is not set \
                 (set it, name another with `api_key_env`, or write `api_key_env: \"\"` for an \
                 upstream without keys)"
            ),
        )),
    }
}

/// `RemoteSettings::validate`'s message (`remote policy `p`: base_url ...`) with the field named the way
/// the file does.
fn remote_settings_error(name: &str, m: &str) -> ConfigError {
    let m = m
        .trim_start_matches(&format!("remote policy `{name}`: "))
        .to_string();
    let f = [
        "base_url",
        "model",
        "timeout",
        "max_concurrency",
        "max_answer_bytes",
    ]
    .into_iter()
    .find(|f| m.contains(f))
    .map_or("model", |f| if f == "timeout" { "timeout_secs" } else { f });
    policy_field(name, f, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::File::create(&p).unwrap().write_all(body).unwrap();
        p
    }

    /// `m.gguf` in `dir`: a link to a real test model (the checks read its header and size).
    fn fake_gguf(dir: &Path) -> PathBuf {
        let p = dir.join("m.gguf");
        let model = crate::test_models::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
        std::os::unix::fs::symlink(model, &p).unwrap();
        p
    }

    fn load(dir: &Path, yaml: &str) -> Result<Config, ConfigError> {
        let cfg = write(dir, "c.yaml", yaml.as_bytes());
        Config::from_file(&cfg, &Overrides::default())
    }

    /// Each config is refused with a message containing its needle.
    fn assert_refused(dir: &Path, cases: &[(&str, &str)]) {
        for (yaml, needle) in cases {
            let e = load(dir, yaml).expect_err(yaml).to_string();
            assert!(
                e.contains(needle),
                "{yaml:?}: message {e:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let m = fake_gguf(dir.path());
        let cfg = load(
            dir.path(),
            "policies:\n  a: {provider: llama_cpp, model: m.gguf, temperature: 0.5}\n  b: {model: ./m.gguf}\n",
        )
        .unwrap();
        assert_eq!(cfg.policies.len(), 2);
        assert_eq!(cfg.policies[0].model_path, m.canonicalize().unwrap());
        assert_eq!(cfg.policies[0].model_path, cfg.policies[1].model_path);
        assert_eq!(cfg.policies[0].temperature, 0.5);
        assert_eq!(cfg.policies[1].temperature, 1.0);
    }

    #[test]
    fn errors_name_the_policy_and_field() {
        let dir = tempfile::tempdir().unwrap();
        fake_gguf(dir.path());
        write(dir.path(), "not.gguf", b"hello world");
        let cases = [
            ("policies:\n  p0: {model: m.gguf, colour: red}\n", "colour"),
            (
                "policies:\n  p0: {model: missing.gguf}\n",
                "policies.p0.model",
            ),
            ("policies:\n  p0: {model: not.gguf}\n", "not a GGUF"),
            (
                "policies:\n  p0: {model: m.gguf, temperature: hot}\n",
                "temperature",
            ),
            (
                "policies:\n  p0: {model: m.gguf, temperature: -1}\n",
                "policies.p0.temperature",
            ),
            (
                "policies:\n  p0: {model: m.gguf, provider: anthropic}\n",
                "policies.p0.provider: unknown provider `anthropic`",
            ),
            ("policies:\n  p0: {model: m.gguf, n_ctx: -5}\n", "n_ctx"),
            ("policies: {}\n", "empty"),
            (
                "server: {queue_size: 2, max_batch_items: 3}\npolicies:\n  p0: {model: m.gguf}\n",
                "queue_size",
            ),
            (
                "server: {allowed_origins: ['http://ok.example', 'null']}\npolicies:\n  p0: {model: m.gguf}\n",
                "server.allowed_origins: `null`",
            ),
            (
                "policies:\n  a: {model: m.gguf, n_gpu_layers: 0}\n  b: {model: m.gguf, n_gpu_layers: 5}\n",
                "n_gpu_layers",
            ),
        ];
        assert_refused(dir.path(), &cases);
    }

    #[test]
    fn remote_policies_are_validated_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        fake_gguf(dir.path());
        let cases = [
            (
                "policies:\n  r: {provider: openai, model: m, api_key_env: ''}\n",
                "policies.r.base_url: provider `openai` needs a `base_url`",
            ),
            (
                "policies:\n  r: {provider: llama_scorer, model: m, base_url: 'ftp://h'}\n",
                "policies.r.base_url",
            ),
            (
                "policies:\n  r: {provider: fireworks, model: m, api_key_env: LLAMA_SCORER_UNIT_UNSET_VAR}\n",
                "policies.r.api_key_env: the environment variable `LLAMA_SCORER_UNIT_UNSET_VAR`",
            ),
            (
                "policies:\n  r: {provider: llama_scorer, model: m, base_url: 'http://h', n_ctx: 64}\n",
                "policies.r.n_ctx: applies to llama_cpp policies only",
            ),
            (
                "policies:\n  r: {provider: llama_scorer, model: m, base_url: 'http://h', chat_template: x}\n",
                "policies.r.chat_template",
            ),
            (
                "policies:\n  r: {provider: llama_scorer, model: m, base_url: 'http://h', max_concurrency: 0}\n",
                "policies.r.max_concurrency",
            ),
            (
                "policies:\n  r: {provider: llama_scorer, model: m, base_url: 'http://h', timeout_secs: 0}\n",
                "policies.r.timeout_secs",
            ),
            (
                "policies:\n  r: {provider: llama_scorer, model: m, base_url: 'http://h', temperature: 0}\n",
                "policies.r.temperature",
            ),
            (
                "policies:\n  l: {model: m.gguf, base_url: 'http://h'}\n",
                "policies.l.base_url: applies to remote providers only",
            ),
        ];
        assert_refused(dir.path(), &cases);
    }

    #[test]
    fn a_mixed_file_keeps_its_order_and_the_key_comes_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        fake_gguf(dir.path());
        // PATH is set in every test environment; it stands in for a key variable.
        let cfg = load(
            dir.path(),
            "policies:\n  p0: {provider: fireworks, model: accounts/x/models/y, temperature: 0.5, \
             api_key_env: PATH}\n  pi_clone: {provider: llama_cpp, model: m.gguf, temperature: 0.5, seed: 42}\n  \
             far: {provider: llama_scorer, model: big, base_url: 'http://gpu-box:8080/', timeout_secs: 9, \
             max_retries: 1, max_concurrency: 3}\n",
        )
        .unwrap();
        assert_eq!(cfg.policy_order, ["p0", "pi_clone", "far"]);
        assert_eq!(cfg.policies.len(), 1);
        let [p0, far] = &cfg.remote_policies[..] else {
            panic!("{:?}", cfg.remote_policies)
        };
        assert_eq!(p0.remote.provider, Provider::named("fireworks").unwrap());
        assert_eq!(
            p0.remote.resolved_base_url().unwrap(),
            crate::remote::FIREWORKS_BASE_URL
        );
        assert_eq!(
            p0.remote.api_key.as_ref().map(|k| k.expose().to_string()),
            std::env::var("PATH").ok().map(|v| v.trim().to_string())
        );
        assert_eq!(p0.temperature, 0.5);
        assert!(
            far.remote.api_key.is_none(),
            "llama_scorer sends no key unless told"
        );
        assert_eq!(far.remote.timeout, std::time::Duration::from_secs(9));
        assert_eq!((far.remote.max_retries, far.remote.max_concurrency), (1, 3));
    }

    #[test]
    fn the_decode_chunk_reads_its_old_name_too() {
        let dir = tempfile::tempdir().unwrap();
        fake_gguf(dir.path());
        for key in ["decode_chunk", "batch_size"] {
            let cfg = load(
                dir.path(),
                &format!("server: {{{key}: 16}}\npolicies:\n  p0: {{model: m.gguf}}\n"),
            )
            .unwrap();
            assert_eq!(cfg.decode_chunk, 16, "{key}");
            assert_eq!(cfg.engine_settings().decode_chunk, 16, "{key}");
        }
    }

    #[test]
    fn unknown_field_error_names_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        fake_gguf(dir.path());
        let e = load(
            dir.path(),
            "policies:\n  p0: {model: m.gguf, colour: red}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p0"), "{e}");
    }

    #[test]
    fn home_is_expanded() {
        // The rule alone, given a HOME: the test threads share one environment, so none writes it.
        let home = Some(std::ffi::OsString::from("/home/u"));
        let expand = |raw: &str| expand_home_in(raw, home.clone());
        assert_eq!(expand("~/m.gguf"), Ok(PathBuf::from("/home/u/m.gguf")));
        assert_eq!(expand("~"), Ok(PathBuf::from("/home/u")));
        assert_eq!(expand("m.gguf"), Ok(PathBuf::from("m.gguf")));
        assert_eq!(expand("~other/m.gguf"), Ok(PathBuf::from("~other/m.gguf")));
        assert!(
            expand_home_in("~/m.gguf", None)
                .unwrap_err()
                .contains("HOME")
        );
    }
}
