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
