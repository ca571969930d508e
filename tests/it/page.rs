//! The web page at `/`: its files are served from the binary with the right content types and headers, and
//! without the API key (they hold no data) while the API it calls still needs one.

use serde_json::json;

use crate::common::*;

#[test]
fn the_page_and_its_assets_are_served_with_their_content_types() {
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<script src=\"app.js\""),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "async function fetchScores(",
        ),
        ("/style.css", "text/css; charset=utf-8", ".tok"),
    ] {
        let r = client().get(format!("{}{path}", server())).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        let body = r.text().unwrap();
        assert!(body.contains(needle), "{path} lacks {needle:?}");
        // Self-contained: nothing is loaded from another host.
        for external in ["http://", "https://", "//cdn", "@import", "fonts.g"] {
            assert!(!body.contains(external), "{path} refers to {external:?}");
        }
    }
}

#[test]
fn the_page_is_public_but_the_api_behind_it_needs_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "server: {{api_keys: [page-key]}}\npolicies:\n  {SMOL}: {{model: {}}}\n",
            smol_path().display()
        ),
    );
    let running = start(&config);
    let base = &running.base;
    for path in ["/", "/app.js", "/style.css"] {
        let r = client().get(format!("{base}{path}")).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = client().get(format!("{base}/v1/models")).send().unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(format!("{base}/index.html")).send().unwrap();
    assert_eq!(r.status(), 401, "only the page's own paths are public");
    let (status, _) = post_to(base, "/v1/logprobs", &json!({"model": SMOL}));
    assert_eq!(status, 401);
    let r = client()
        .get(format!("{base}/v1/models"))
        .bearer_auth("page-key")
        .header("Origin", base.as_str())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
