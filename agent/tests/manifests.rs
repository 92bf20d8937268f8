//! The shipped manifests against the real code: the ConfigMap's agent config loads with the
//! agent's own parser and has no MTU; the DaemonSet's commands parse with the real CLIs, and its
//! install-cni init container works with that config. (Schema validation of the manifests runs
//! in CI: build/validate-manifests.)

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_yaml::Value;
use weft_agent::config::AgentConfig;
use weft_agent::ctl::Cli;

fn manifest() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/yamls/weft.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

fn object<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in weft.yml"))
}

fn agent_conf(docs: &[Value]) -> String {
    object(docs, "ConfigMap")["data"]["weft-agent.conf"]
        .as_str()
        .unwrap()
        .to_string()
}

fn container<'a>(docs: &'a [Value], list: &str, name: &str) -> &'a Value {
    object(docs, "DaemonSet")["spec"]["template"]["spec"][list]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn configmap_config_loads_and_has_no_mtu() {
    let docs = manifest();
    let text = agent_conf(&docs);
    let mut config = AgentConfig::from_yaml(&text, Path::new("weft.yml")).unwrap();
    config.node_name = "node-1".into();
    config.validate().unwrap();
    assert_eq!(config.mtu, 0, "the MTU comes from the plan");
    assert!(!text.to_lowercase().contains("mtu:"), "{text}");
    assert_eq!(config.metrics_bind_address, "127.0.0.1:9476");
    assert_eq!(config.api_socket, Path::new("/var/run/weft/agent.sock"));
    // Every host path the config names is mounted into the agent container.
    let mounts: Vec<PathBuf> = container(&docs, "containers", "weft-agent")["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| PathBuf::from(m["mountPath"].as_str().unwrap()))
        .collect();
    for path in [
        config.ovs_run_dir.clone(),
        config.cni_socket.parent().unwrap().to_path_buf(),
        config.data_dir.clone(),
        config.cni_conf_dir.clone(),
        Path::new(&config.log_file).parent().unwrap().to_path_buf(),
    ] {
        assert!(
            mounts.contains(&path),
            "{} not mounted: {mounts:?}",
            path.display()
        );
    }
}

#[test]
fn daemonset_shape() {
    let docs = manifest();
    let spec = &object(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["tolerations"][0]["operator"], "Exists");
    for name in ["weft-ovs", "weft-agent"] {
        assert!(container(&docs, "containers", name)["resources"]["requests"]["cpu"].is_string());
    }
    let role = object(&docs, "ClusterRole");
    let rules = role["rules"].as_sequence().unwrap();
    let verbs = |resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| strings(&r["resources"]).contains(&resource.to_string()))
            .flat_map(|r| strings(&r["verbs"]))
            .collect()
    };
    // Rule by rule in docs/security.md (reliability_security.rs pins the API groups too).
    assert_eq!(verbs("nodes"), ["list", "watch", "patch"]);
    // NetworkPolicy: its own view of pods, namespaces and policies, read-only.
    assert_eq!(
        verbs("pods"),
        ["list", "watch"],
        "the agent only lists/watches pods"
    );
    assert_eq!(verbs("namespaces"), ["list", "watch"]);
    assert_eq!(verbs("networkpolicies"), ["list", "watch"]);
    assert_eq!(verbs("events"), ["create", "patch"]);
    assert_eq!(
        rules.len(),
        4,
        "nothing beyond nodes, events, pods/namespaces and networkpolicies"
    );
}

#[test]
fn probes_parse_with_weftctl() {
    let docs = manifest();
    let agent = container(&docs, "containers", "weft-agent");
    for probe in ["readinessProbe", "livenessProbe"] {
        let command = strings(&agent[probe]["exec"]["command"]);
        assert_eq!(command[0], "weftctl");
        Cli::try_parse_from(&command).unwrap_or_else(|e| panic!("{probe}: {e}"));
    }
}

#[test]
fn install_cni_init_container_works_with_the_configmap() {
    let docs = manifest();
    let command = strings(&container(&docs, "initContainers", "install-cni")["command"]);
    assert_eq!(command[0], "weft-agent");
    assert!(command.contains(&"install-cni".to_string()), "{command:?}");
    // The same config, with the host directories moved into a temporary root.
    let root = tempfile::tempdir().unwrap();
    let conf_dir = root.path().join("net.d");
    let bin_dir = root.path().join("bin");
    let text = agent_conf(&docs)
        .replace("/etc/cni/net.d", conf_dir.to_str().unwrap())
        .replace("/opt/cni/bin", bin_dir.to_str().unwrap());
    let conf = root.path().join("weft-agent.conf");
    std::fs::write(&conf, format!("nodeName: node-1\n{text}")).unwrap();
    let plugin = root.path().join("weft-plugin");
    std::fs::write(&plugin, b"#!/bin/sh\n").unwrap();
    let mut args: Vec<String> = command[1..].to_vec();
    let at = args.iter().position(|a| a == "--config").unwrap();
    args[at + 1] = conf.display().to_string();
    let at = args.iter().position(|a| a == "--plugin").unwrap();
    args[at + 1] = plugin.display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-agent"))
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let conflist = std::fs::read_to_string(conf_dir.join("10-weft.conflist")).unwrap();
    assert!(conflist.contains("/var/run/weft/cni.sock"), "{conflist}");
    assert!(conflist.contains("portmap"), "{conflist}");
    // The version libcni 1.1.x (containerd 1.6/1.7, podman 4) and the chained portmap 1.1.x read.
    let parsed: serde_json::Value = serde_json::from_str(&conflist).unwrap();
    assert_eq!(parsed["cniVersion"], "1.0.0", "{conflist}");
    assert!(bin_dir.join("weft").exists());
}
