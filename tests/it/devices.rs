//! Where models run: `/ready` names a device per model, consistent with the devices llama.cpp found
//! (CPU on a machine without a GPU, as CI is); `llama-scorer devices` lists them.

use serde_json::Value;

use crate::common::*;

fn get(path: &str) -> Value {
    client()
        .get(format!("{}{path}", server()))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn ready_reports_a_device_per_model() {
    let ready = get("/ready");
    let devices = ready["devices"].as_array().expect("devices listed");
    assert!(
        devices.iter().any(|d| d["kind"] == "cpu"),
        "no CPU device: {ready}"
    );
    let has_gpu = devices
        .iter()
        .any(|d| d["kind"] == "gpu" || d["kind"] == "igpu");
    for m in ready["models"].as_array().unwrap() {
        let total = m["n_offloadable_layers"].as_u64().unwrap();
        let offloaded = m["offloaded_layers"].as_u64().unwrap();
        assert!(total > 1 && offloaded <= total, "{m}");
        assert_eq!(m["n_gpu_layers"], -1, "{m}");
        if has_gpu {
            assert_eq!(offloaded, total, "n_gpu_layers -1 offloads all: {m}");
            assert_ne!(m["device"], "CPU", "{m}");
        } else {
            assert_eq!(m["device"], "CPU", "{m}");
            assert_eq!(offloaded, 0, "{m}");
        }
    }
}

#[test]
fn devices_command_lists_the_cpu() {
    let out = binary().arg("devices").output().unwrap();
    succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dynamic_backends"], cfg!(feature = "dynamic-backends"));
    assert!(
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "cpu"),
        "{v}"
    );
}
