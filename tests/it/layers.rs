//! The layers the compiler cannot yet keep apart (one crate), checked on the sources: the engine imports
//! nothing of the rest of the crate and no HTTP type, only the server start-up reaches into the HTTP layer,
//! and the policy seam (`served`) and the neutral report stay free of the HTTP framework. A workspace split
//! would make these compile errors; until then a wrong arrow fails here, naming the file and the line.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The lines of a file before its `#[cfg(test)]` module (tests may reach further than the code).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// `file:line: text` of every code line under `paths` that `bad` flags.
fn offending(paths: &[&str], bad: impl Fn(&str) -> bool) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for p in paths {
        let path = src.join(p);
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else {
            files.push(path);
        }
    }
    assert!(!files.is_empty(), "no sources under {paths:?}");
    let mut out = Vec::new();
    for file in files {
        for (n, line) in code_lines(&file) {
            if bad(&line) {
                out.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    out
}

/// Whether `line` names an HTTP framework or server crate.
fn names_http(line: &str) -> bool {
    ["axum", "hyper", "tower", "http"]
        .iter()
        .any(|c| line.contains(&format!("{c}::")) || line.contains(&format!("use {c}")))
}

#[test]
fn the_engine_imports_nothing_of_the_rest_and_no_http() {
    let wrong = offending(&["engine"], |l| {
        let outside = l
            .match_indices("crate::")
            .any(|(i, _)| !l[i..].starts_with("crate::engine"));
        outside || names_http(l) || l.contains("reqwest")
    });
    assert!(
        wrong.is_empty(),
        "the engine reaches out of its layer:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_server_start_up_reaches_into_the_http_layer() {
    let outside_api = [
        "batch",
        "bench.rs",
        "config.rs",
        "engine",
        "gguf",
        "input.rs",
        "ratios.rs",
        "remote",
        "report.rs",
        "request_policy.rs",
        "served",
        "shard.rs",
        "sigbus.rs",
    ];
    let wrong = offending(&outside_api, |l| {
        l.contains("crate::api") || l.contains("super::api")
    });
    assert!(
        wrong.is_empty(),
        "a module below the HTTP layer imports it:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_policy_seam_and_the_report_are_free_of_the_http_framework() {
    let wrong = offending(&["served", "report.rs", "ratios.rs", "batch"], names_http);
    assert!(
        wrong.is_empty(),
        "HTTP framework types below the handlers:\n{}",
        wrong.join("\n")
    );
}
