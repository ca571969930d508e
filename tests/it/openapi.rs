//! `openapi.yaml` describes the routes the server serves: every documented operation exists, and every
//! documented example request succeeds.

use serde_json::{Value, json};

use crate::common::*;

fn spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn every_documented_operation_is_served() {
    let spec = spec();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let url = format!("{}{path}", server());
            let r = match method.as_str() {
                "get" => client().get(&url).send().unwrap(),
                "post" => client().post(&url).json(&json!({})).send().unwrap(),
                other => panic!("unexpected method {other} for {path}"),
            };
            let status = r.status().as_u16();
            let body: Value = r.json().unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !(status == 404 && body["error"]["code"] == "not_found"),
                "{method} {path} is documented but not routed"
            );
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.iter().any(|c| c.as_str() == status.to_string()),
                "{method} {path} answered {status}, which the spec does not list"
            );
            if let Some(example) =
                op["requestBody"]["content"]["application/json"]["example"].as_object()
            {
                let mut body = Value::Object(example.clone());
                body["model"] = json!(SMOL);
                let (s, v) = post_to(server(), path, &body);
                assert_eq!(s, 200, "example of {path}: {v}");
            }
        }
    }
}

/// The other direction: every `.route(path, method(..))` in the server's source is documented, at its own
/// path or, for the API routes nested under both prefixes, at `/v1{path}` and `/inference/v1{path}`.
#[test]
fn every_served_route_is_documented() {
    let spec = spec();
    let documented = |path: &str, method: &str| spec["paths"][path][method].is_object();
    let mut found = 0;
    // Every crate's sources (the routes live in crates/http; a route added anywhere is checked).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![root.join("src"), root.join("crates")];
    while let Some(path) = sources.pop() {
        if path.is_dir() {
            sources.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for call in text.split(".route(").skip(1) {
            // Every route must be written `.route("literal", method(..))` (any spacing), or this scan
            // would skip it: a route written another way fails here instead of going unchecked.
            let call = call.trim_start();
            let (route, rest) = call
                .strip_prefix('"')
                .and_then(|c| c.split_once('"'))
                .unwrap_or_else(|| {
                    panic!("{path:?}: a route not written as a string literal: .route({call:.40}")
                });
            let method = rest
                .trim_start_matches(|c: char| c == ',' || c.is_whitespace())
                .split('(')
                .next()
                .unwrap();
            assert!(
                ["get", "post"].contains(&method),
                "{route} in {path:?}: method {method}"
            );
            let at_root = documented(route, method);
            let nested = documented(&format!("/v1{route}"), method)
                && documented(&format!("/inference/v1{route}"), method);
            assert!(
                at_root || nested,
                "{method} {route} ({path:?}) is served but not in openapi.yaml"
            );
            found += 1;
        }
    }
    assert!(found >= 7, "found only {found} routes in the source");
}
