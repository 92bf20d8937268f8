//! Runs the DaemonSet of build/yamls/weft.yml itself (not a hand-written copy) on a test node,
//! with podman, as the kubelet would: the pod template's init containers in order (each must
//! exit 0), then its containers, with their command/args, env (values, and `fieldRef`
//! `spec.nodeName`, `status.podIP`, `status.hostIP`), `privileged`, hostPath and ConfigMap
//! volumes with their mount options (readOnly, `mountPropagation`), `hostNetwork` as the test
//! node's network namespace, restartPolicy Always, and the readiness and liveness probes run as
//! the kubelet runs them (`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//! `failureThreshold`, `successThreshold`; exec probes through `podman exec`; a liveness probe
//! that fails `failureThreshold` times in a row restarts the container).
//!
//! What a test node is not, and how the runner makes up for it (all in [`NodeRoot`]):
//! - the test nodes share the machine's filesystem, so each node has a root directory and a
//!   hostPath `P` is `ROOT/P`, except `/var/run/netns` and `/run/netns` (the pods' network
//!   namespaces, made by the test with `ip netns`, live there for every node) and `/lib/modules`
//!   (the machine's, when it has one); hostPath `type`s are checked as the kubelet checks them
//!   (`DirectoryOrCreate` creates, `Directory` must exist, empty must exist);
//! - no kube-apiserver: the ConfigMap's data comes from the manifest, with the edits a test
//!   needs ([`ConfigEdits`]: the kubeconfig of the test API server with the DaemonSet's
//!   ServiceAccount token, the netdev datapath where there is no OVS kernel module).
//!
//! The podman is private to the runner: its own `containers.conf` (cgroupfs, runc, capped
//! ulimits, file events), storage (`--root`, `--runroot`, overlay) and tmp dir under a test
//! directory; its images are built by `build/image --bins DIR` into that storage. Dropping a
//! [`PodRunner`] stops its supervisor threads and removes its containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::apiserver::rbac::WEFT_MANIFEST;
use crate::netns;

/// A probe of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The exec command.
    pub exec: Vec<String>,
    /// `initialDelaySeconds` (default 0).
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10).
    pub period: Duration,
    /// `timeoutSeconds` (default 1).
    pub timeout: Duration,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
}

/// Where an env var's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// `value`.
    Literal(String),
    /// `valueFrom.fieldRef.fieldPath`.
    Field(String),
}

/// A volume mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volume's name.
    pub volume: String,
    /// Where in the container.
    pub path: String,
    /// `readOnly`.
    pub read_only: bool,
    /// `mountPropagation` (None, HostToContainer, Bidirectional).
    pub propagation: Option<String>,
}

/// A container of the pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// `command` then `args`.
    pub argv: Vec<String>,
    /// Env in order.
    pub env: Vec<(String, EnvValue)>,
    /// `securityContext.privileged`.
    pub privileged: bool,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Readiness probe.
    pub readiness: Option<Probe>,
    /// Liveness probe.
    pub liveness: Option<Probe>,
}

/// A volume of the pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    /// hostPath with its type ("" when unset).
    HostPath {
        /// Path on the node.
        path: String,
        /// `type`.
        kind: String,
    },
    /// A ConfigMap by name.
    ConfigMap(String),
}

/// The DaemonSet's pod template, as read from the manifest.
#[derive(Debug, Clone)]
pub struct PodTemplate {
    /// DaemonSet name.
    pub name: String,
    /// `hostNetwork`.
    pub host_network: bool,
    /// `terminationGracePeriodSeconds` (default 30).
    pub grace: Duration,
    /// Init containers in order.
    pub init_containers: Vec<Container>,
    /// Containers.
    pub containers: Vec<Container>,
    /// Volumes by name.
    pub volumes: BTreeMap<String, Volume>,
    /// The manifest's ConfigMaps: name -> data.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

fn secs(v: &Value, key: &str, default: u64) -> Duration {
    Duration::from_secs(v.get(key).and_then(Value::as_u64).unwrap_or(default))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn probe(v: &Value) -> Result<Option<Probe>> {
    if v.is_null() {
        return Ok(None);
    }
    let exec = strings(&v["exec"]["command"]);
    ensure!(!exec.is_empty(), "only exec probes are run, got {v}");
    Ok(Some(Probe {
        exec,
        initial_delay: secs(v, "initialDelaySeconds", 0),
        period: secs(v, "periodSeconds", 10),
        timeout: secs(v, "timeoutSeconds", 1),
        failure_threshold: v["failureThreshold"].as_u64().unwrap_or(3) as u32,
        success_threshold: v["successThreshold"].as_u64().unwrap_or(1) as u32,
    }))
}

fn container(v: &Value) -> Result<Container> {
    let name = v["name"]
        .as_str()
        .context("container without name")?
        .to_string();
    let mut argv = strings(&v["command"]);
    argv.extend(strings(&v["args"]));
    ensure!(
        !argv.is_empty(),
        "container {name}: no command (the image's CMD is not used here)"
    );
    let env = v["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let key = e["name"].as_str().unwrap_or_default().to_string();
            if let Some(path) = e
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str)
            {
                Ok((key, EnvValue::Field(path.to_string())))
            } else if e.get("valueFrom").is_some() {
                bail!("container {name}: env {key}: only fieldRef is supported")
            } else {
                Ok((
                    key,
                    EnvValue::Literal(e["value"].as_str().unwrap_or_default().to_string()),
                ))
            }
        })
        .collect::<Result<_>>()?;
    let mounts = v["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| Mount {
            volume: m["name"].as_str().unwrap_or_default().to_string(),
            path: m["mountPath"].as_str().unwrap_or_default().to_string(),
            read_only: m["readOnly"].as_bool().unwrap_or(false),
            propagation: m["mountPropagation"].as_str().map(str::to_string),
        })
        .collect();
    Ok(Container {
        image: v["image"]
            .as_str()
            .context("container without image")?
            .to_string(),
        privileged: v
            .pointer("/securityContext/privileged")
            .and_then(Value::as_bool)
            == Some(true),
        readiness: probe(&v["readinessProbe"]).with_context(|| format!("container {name}"))?,
        liveness: probe(&v["livenessProbe"]).with_context(|| format!("container {name}"))?,
        name,
        argv,
        env,
        mounts,
    })
}

impl PodTemplate {
    /// The template of the one DaemonSet in build/yamls/weft.yml.
    pub fn weft() -> Result<PodTemplate> {
        Self::parse(WEFT_MANIFEST)
    }

    /// The template of the DaemonSet in a multi-document manifest, and its ConfigMaps.
    pub fn parse(manifest: &str) -> Result<PodTemplate> {
        let mut daemonset = None;
        let mut config_maps = BTreeMap::new();
        for doc in serde_yaml::Deserializer::from_str(manifest) {
            let v = Value::deserialize(doc)?;
            match v["kind"].as_str() {
                Some("DaemonSet") => daemonset = Some(v),
                Some("ConfigMap") => {
                    let data = v["data"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    config_maps.insert(
                        v["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        data,
                    );
                }
                _ => {}
            }
        }
        let ds = daemonset.context("no DaemonSet in the manifest")?;
        let spec = &ds["spec"]["template"]["spec"];
        let list = |key: &str| -> Result<Vec<Container>> {
            spec[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(container)
                .collect()
        };
        let volumes = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let name = v["name"].as_str().unwrap_or_default().to_string();
                let volume = if let Some(path) = v.pointer("/hostPath/path").and_then(Value::as_str)
                {
                    Volume::HostPath {
                        path: path.to_string(),
                        kind: v
                            .pointer("/hostPath/type")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    }
                } else if let Some(cm) = v.pointer("/configMap/name").and_then(Value::as_str) {
                    Volume::ConfigMap(cm.to_string())
                } else {
                    bail!("volume {name}: only hostPath and configMap volumes are run")
                };
                Ok((name, volume))
            })
            .collect::<Result<_>>()?;
        Ok(PodTemplate {
            name: ds["metadata"]["name"]
                .as_str()
                .unwrap_or("daemonset")
                .to_string(),
            host_network: spec["hostNetwork"].as_bool() == Some(true),
            grace: secs(spec, "terminationGracePeriodSeconds", 30),
            init_containers: list("initContainers")?,
            containers: list("containers")?,
            volumes,
            config_maps,
        })
    }
}

/// Edits a test makes to the manifest's ConfigMaps (what an admin would edit before applying).
#[derive(Debug, Clone, Default)]
pub struct ConfigEdits {
    /// (ConfigMap, key, top-level YAML field, value): sets `field: value` in that data entry.
    pub fields: Vec<(String, String, String, String)>,
    /// (ConfigMap, key, content): adds or replaces a data entry.
    pub files: Vec<(String, String, String)>,
}

/// Sets top-level `field: value` in a YAML text, replacing an existing line or appending.
pub fn set_yaml_field(text: &str, field: &str, value: &str) -> String {
    let prefix = format!("{field}:");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                format!("{field}: {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(format!("{field}: {value}"));
    }
    out.join("\n") + "\n"
}

/// The node a pod runs on: its network namespace and the root its hostPaths live under.
#[derive(Debug, Clone)]
pub struct NodeRoot {
    /// Node name (`spec.nodeName`).
    pub name: String,
    /// The node's network namespace (`hostNetwork`).
    pub netns: String,
    /// The node IP (`status.podIP` / `status.hostIP` with host networking).
    pub ip: String,
    /// Where the node's hostPaths live.
    pub root: PathBuf,
}

impl NodeRoot {
    /// Where hostPath `path` is for this node (see the module docs).
    pub fn host_path(&self, path: &str) -> PathBuf {
        let shared = ["/var/run/netns", "/run/netns"];
        if shared.contains(&path) || (path == "/lib/modules" && Path::new(path).is_dir()) {
            return PathBuf::from(path);
        }
        self.root.join(path.trim_start_matches('/'))
    }
}

/// This process's hard RLIMIT_NOFILE (containers may not be given more without
/// CAP_SYS_RESOURCE), at most 1048576.
fn hard_nofile() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
        })
        .unwrap_or(1024u64)
        .min(1_048_576)
}

/// podman private to a runner.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Its directory (config, storage, run root, tmp).
    pub dir: PathBuf,
}

impl Engine {
    /// Writes the config under `dir`.
    pub fn new(dir: &Path) -> Result<Engine> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc=4096:4096\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{d}/events.log\"\nruntime = \"runc\"\ntmp_dir = \"{d}/tmp\"\n",
                d = dir.display(),
                nofile = hard_nofile(),
            ),
        )?;
        Ok(Engine {
            dir: dir.to_path_buf(),
        })
    }

    /// `podman ARGS` with this engine's config and storage.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--storage-driver")
            .arg("overlay")
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c
    }

    /// Runs `podman ARGS`; its output whatever the status.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        self.command(args).output().context("cannot run podman")
    }

    /// Runs `podman ARGS`, which must succeed; returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "podman {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Builds the Weft image with `build/image --bins BINS --tag TAG` into this engine's storage;
    /// returns the image name and the build's stderr (its timings).
    pub fn build_weft_image(&self, bins: &Path, tag: &str) -> Result<(String, String)> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/image");
        let out = Command::new(&script)
            .args(["--bins", &bins.display().to_string(), "--tag", tag])
            .env("WEFT_IMAGE_PODMAN_ROOT", &self.dir)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .context("cannot run build/image")?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(out.status.success(), "build/image failed: {stderr}");
        let image = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        ensure!(image.contains(tag), "build/image printed {image:?}");
        Ok((image, stderr))
    }

    /// Whether container `name` is running.
    pub fn running(&self, name: &str) -> bool {
        self.output(&["inspect", "--format", "{{.State.Running}}", name])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
            .unwrap_or(false)
    }

    /// `podman exec NAME CMD...` with a timeout (the probe's): success, or why not.
    pub fn exec_probe(&self, name: &str, cmd: &[String], timeout: Duration) -> Result<()> {
        let mut args = vec!["exec", name];
        args.extend(cmd.iter().map(String::as_str));
        let mut child = self
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(status.success(), "exit status {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("timed out after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the kubelet would show for one container.
#[derive(Debug, Clone, Default)]
pub struct ContainerStatus {
    /// Readiness (true without a readiness probe once running).
    pub ready: bool,
    /// Restarts (exits and liveness failures).
    pub restarts: u32,
    /// Probe results and restarts, in order (`readiness ok`, `liveness failed: ...`, ...).
    pub events: Vec<String>,
}

type Statuses = Arc<Mutex<BTreeMap<String, ContainerStatus>>>;

/// One pod of the DaemonSet on one node, run and supervised as the kubelet would.
pub struct PodRunner {
    engine: Engine,
    template: PodTemplate,
    node: NodeRoot,
    image: String,
    edits: ConfigEdits,
    statuses: Statuses,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Each start of the pod gets a new uid (container names carry it).
    generation: u32,
}

impl PodRunner {
    /// Starts the pod on `node`, every container's image replaced by `image` (the tag under
    /// test): init containers, then containers, then the supervisors and probes.
    pub fn start(
        engine: &Engine,
        template: &PodTemplate,
        node: NodeRoot,
        image: &str,
        edits: ConfigEdits,
    ) -> Result<PodRunner> {
        let mut runner = PodRunner {
            engine: engine.clone(),
            template: template.clone(),
            node,
            image: image.to_string(),
            edits,
            statuses: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            generation: 0,
        };
        runner.start_pod()?;
        Ok(runner)
    }

    fn container_name(&self, c: &str) -> String {
        format!(
            "{}-{}-{}-{}",
            self.template.name, self.node.name, self.generation, c
        )
    }

    /// The container name of `container` in the running pod (for `podman exec`, logs).
    pub fn name_of(&self, container: &str) -> String {
        self.container_name(container)
    }

    /// The ConfigMap volume's directory for this pod (data with the edits applied).
    fn config_map_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.node.root.join(format!("configmaps/{name}"));
        std::fs::create_dir_all(&dir)?;
        let mut data = self
            .template
            .config_maps
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("the pod mounts ConfigMap {name}, which the manifest lacks"))?;
        for (cm, key, field, value) in &self.edits.fields {
            if cm == name {
                let text = data.get(key).cloned().unwrap_or_default();
                data.insert(key.clone(), set_yaml_field(&text, field, value));
            }
        }
        for (cm, key, content) in &self.edits.files {
            if cm == name {
                data.insert(key.clone(), content.clone());
            }
        }
        for (key, text) in data {
            std::fs::write(dir.join(key), text)?;
        }
        Ok(dir)
    }

    fn run_args(&self, c: &Container, detach: bool) -> Result<Vec<String>> {
        let mut args: Vec<String> = vec!["run".into()];
        if detach {
            args.push("--detach".into());
        }
        args.extend(["--name".into(), self.container_name(&c.name)]);
        ensure!(self.template.host_network, "only hostNetwork pods are run");
        args.push(format!(
            "--network=ns:{}",
            netns::path(&self.node.netns).display()
        ));
        if c.privileged {
            args.push("--privileged".into());
        }
        for (key, value) in &c.env {
            let value = match value {
                EnvValue::Literal(v) => v.clone(),
                EnvValue::Field(path) => match path.as_str() {
                    "spec.nodeName" => self.node.name.clone(),
                    "status.podIP" | "status.hostIP" => self.node.ip.clone(),
                    "metadata.namespace" => "weft-system".into(),
                    other => bail!("env {key}: fieldRef {other} is not supported"),
                },
            };
            args.extend(["--env".into(), format!("{key}={value}")]);
        }
        for m in &c.mounts {
            let volume = self
                .template
                .volumes
                .get(&m.volume)
                .ok_or_else(|| anyhow!("container {}: no volume {}", c.name, m.volume))?;
            let source = match volume {
                Volume::HostPath { path, kind } => {
                    let p = self.node.host_path(path);
                    match kind.as_str() {
                        "DirectoryOrCreate" => std::fs::create_dir_all(&p)?,
                        "Directory" | "" => ensure!(
                            p.exists(),
                            "hostPath {path} ({}) does not exist on node {} (type {kind:?})",
                            p.display(),
                            self.node.name
                        ),
                        other => bail!("hostPath type {other} is not supported"),
                    }
                    p
                }
                Volume::ConfigMap(name) => self.config_map_dir(name)?,
            };
            let mut opts = vec![if m.read_only { "ro" } else { "rw" }];
            match m.propagation.as_deref() {
                None | Some("None") => {}
                Some("HostToContainer") => opts.push("rslave"),
                Some("Bidirectional") => opts.push("rshared"),
                Some(other) => bail!("mountPropagation {other} is not supported"),
            }
            args.extend([
                "--volume".into(),
                format!("{}:{}:{}", source.display(), m.path, opts.join(",")),
            ]);
        }
        args.push(self.image.clone());
        args.extend(c.argv.iter().cloned());
        Ok(args)
    }

    fn start_pod(&mut self) -> Result<()> {
        self.generation += 1;
        self.stop = Arc::new(AtomicBool::new(false));
        for c in &self.template.init_containers {
            let args = self.run_args(c, false)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = self.engine.output(&args)?;
            let name = self.container_name(&c.name);
            let _ = self.engine.output(&["rm", "--force", &name]);
            ensure!(
                out.status.success(),
                "init container {} failed ({}): {}{}",
                c.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            self.record(
                &c.name,
                format!("init done: {}", String::from_utf8_lossy(&out.stdout).trim()),
            );
        }
        for c in &self.template.containers {
            let args = self.run_args(c, true)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.engine.run(&args)?;
            self.statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    c.name.clone(),
                    ContainerStatus {
                        ready: c.readiness.is_none(),
                        ..ContainerStatus::default()
                    },
                );
            let supervisor = Supervisor {
                engine: self.engine.clone(),
                container: c.clone(),
                name: self.container_name(&c.name),
                statuses: Arc::clone(&self.statuses),
                stop: Arc::clone(&self.stop),
                grace: self.template.grace,
            };
            self.threads
                .push(std::thread::spawn(move || supervisor.run()));
        }
        Ok(())
    }

    /// Records a completed init container (it counts as ready: it ran to success).
    fn record(&self, container: &str, event: String) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let status = statuses.entry(container.to_string()).or_default();
        status.ready = true;
        status.events.push(event);
    }

    /// Every container's status.
    pub fn statuses(&self) -> BTreeMap<String, ContainerStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether every container is ready (the pod's Ready condition).
    pub fn ready(&self) -> bool {
        let s = self.statuses();
        !s.is_empty() && s.values().all(|c| c.ready)
    }

    /// Waits until the pod is ready.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.ready() {
            if Instant::now() > deadline {
                bail!(
                    "pod on {} not ready after {timeout:?}: {:#?}\n{}",
                    self.node.name,
                    self.statuses(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Every container's log (`podman logs`).
    pub fn logs(&self) -> String {
        self.template
            .containers
            .iter()
            .map(|c| {
                let name = self.container_name(&c.name);
                let out = self.engine.output(&["logs", &name]);
                let text = out
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default();
                format!("== {name}\n{text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Deletes the pod as the kubelet does: stops the supervisors, then every container with
    /// SIGTERM and the grace period, then removes them.
    pub fn delete(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let grace = self.template.grace.as_secs().to_string();
        let names: Vec<String> = self
            .template
            .containers
            .iter()
            .map(|c| self.container_name(&c.name))
            .collect();
        let mut args = vec!["rm", "--force", "--time", &grace];
        args.extend(names.iter().map(String::as_str));
        let _ = self.engine.output(&args);
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The DaemonSet's rolling update on this node: the pod is deleted and created again from
    /// `image` (init containers run again).
    pub fn update(&mut self, image: &str) -> Result<()> {
        self.delete();
        self.image = image.to_string();
        self.start_pod()
    }

    /// The image the pod runs.
    pub fn image(&self) -> &str {
        &self.image
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The kubelet's loop for one container: restart on exit, run the probes.
struct Supervisor {
    engine: Engine,
    container: Container,
    name: String,
    statuses: Statuses,
    stop: Arc<AtomicBool>,
    grace: Duration,
}

struct ProbeState {
    probe: Probe,
    next: Instant,
    successes: u32,
    failures: u32,
}

impl ProbeState {
    fn new(probe: &Probe, started: Instant) -> Self {
        Self {
            probe: probe.clone(),
            next: started + probe.initial_delay,
            successes: 0,
            failures: 0,
        }
    }
}

impl Supervisor {
    fn update(&self, f: impl FnOnce(&mut ContainerStatus)) {
        let mut s = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        f(s.entry(self.container.name.clone()).or_default());
    }

    fn run(self) {
        let mut started = Instant::now();
        let mut readiness = self
            .container
            .readiness
            .as_ref()
            .map(|p| ProbeState::new(p, started));
        let mut liveness = self
            .container
            .liveness
            .as_ref()
            .map(|p| ProbeState::new(p, started));
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            let mut restart = None;
            if !self.engine.running(&self.name) {
                restart = Some("exited".to_string());
            }
            if restart.is_none() {
                if let Some(r) = readiness.as_mut() {
                    if Instant::now() >= r.next {
                        r.next = Instant::now() + r.probe.period;
                        match self
                            .engine
                            .exec_probe(&self.name, &r.probe.exec, r.probe.timeout)
                        {
                            Ok(()) => {
                                r.failures = 0;
                                r.successes += 1;
                                if r.successes >= r.probe.success_threshold {
                                    self.update(|s| {
                                        if !s.ready {
                                            s.events.push("readiness ok".into());
                                        }
                                        s.ready = true;
                                    });
                                }
                            }
                            Err(e) => {
                                r.successes = 0;
                                r.failures += 1;
                                if r.failures >= r.probe.failure_threshold {
                                    self.update(|s| {
                                        if s.ready {
                                            s.events.push(format!("readiness failed: {e}"));
                                        }
                                        s.ready = false;
                                    });
                                }
                            }
                        }
                    }
                }
                if let Some(l) = liveness.as_mut() {
                    if Instant::now() >= l.next {
                        l.next = Instant::now() + l.probe.period;
                        match self
                            .engine
                            .exec_probe(&self.name, &l.probe.exec, l.probe.timeout)
                        {
                            Ok(()) => {
                                if l.failures > 0 || l.successes == 0 {
                                    self.update(|s| s.events.push("liveness ok".into()));
                                }
                                l.failures = 0;
                                l.successes += 1;
                            }
                            Err(e) => {
                                l.failures += 1;
                                self.update(|s| s.events.push(format!("liveness failed: {e}")));
                                if l.failures >= l.probe.failure_threshold {
                                    restart = Some(format!("liveness failed {} times", l.failures));
                                }
                            }
                        }
                    }
                }
            }
            if let Some(why) = restart {
                if self.stop.load(Ordering::SeqCst) {
                    break;
                }
                let grace = self.grace.as_secs().to_string();
                let _ = self.engine.output(&["stop", "--time", &grace, &self.name]);
                let ok = self
                    .engine
                    .output(&["start", &self.name])
                    .is_ok_and(|o| o.status.success());
                self.update(|s| {
                    s.restarts += 1;
                    s.ready = self.container.readiness.is_none();
                    s.events.push(format!(
                        "restarted ({why}){}",
                        if ok { "" } else { ", start failed" }
                    ));
                });
                started = Instant::now();
                readiness = self
                    .container
                    .readiness
                    .as_ref()
                    .map(|p| ProbeState::new(p, started));
                liveness = self
                    .container
                    .liveness
                    .as_ref()
                    .map(|p| ProbeState::new(p, started));
                // The kubelet's crash-loop backoff starts at 10 s; one second keeps tests short.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// A node of a [`DaemonSetCluster`]: a network namespace on the underlay, its Node object,
/// its root, and the DaemonSet's pod on it. Fields drop in order: pod (containers), namespace,
/// root directory.
pub struct DsNode {
    /// The DaemonSet's pod.
    pub pod: PodRunner,
    /// The node.
    pub node: NodeRoot,
    /// The node's pod CIDR.
    pub pod_cidr: String,
    _netns: NetnsGuard,
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

impl DsNode {
    /// The network config a runtime would pass to the plugin: the first plugin of the conflist
    /// install-cni wrote on this node (with its name and cniVersion), the agent socket mapped to
    /// this node's root.
    pub fn netconf(&self) -> Result<Value> {
        let path = self
            .node
            .host_path("/etc/cni/net.d")
            .join("10-weft.conflist");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("install-cni wrote no {}", path.display()))?;
        let conflist: Value = serde_json::from_str(&text)?;
        let mut weft = conflist["plugins"][0].clone();
        ensure!(
            weft["type"] == "weft",
            "first plugin is not weft: {conflist}"
        );
        let socket = weft["agentSocket"].as_str().unwrap_or_default().to_string();
        weft["agentSocket"] = Value::String(self.node.host_path(&socket).display().to_string());
        weft["name"] = conflist["name"].clone();
        weft["cniVersion"] = conflist["cniVersion"].clone();
        Ok(weft)
    }

    /// Creates pod `name` through the plugin install-cni put in this node's /opt/cni/bin;
    /// returns it and its IPv4 address.
    pub fn add_pod(&self, name: &str) -> Result<(crate::node::Pod, std::net::IpAddr)> {
        static PODS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PODS.fetch_add(1, Ordering::Relaxed);
        let netns_name = format!("{}-p{n}", self.node.netns);
        netns::create(&netns_name)?;
        let pod = crate::node::Pod {
            netns: netns_name,
            name: name.to_string(),
            namespace: "default".to_string(),
            container_id: format!("{:016x}{n:08x}", std::process::id()),
            ifname: "eth0".to_string(),
        };
        let plugin = self.node.host_path("/opt/cni/bin").join("weft");
        let out =
            crate::node::run_plugin(&plugin, "ADD", &pod.call(), &self.netconf()?.to_string())?;
        ensure!(
            out.success,
            "ADD of {name} on {} failed: {}",
            self.node.name,
            out.stdout
        );
        let result = out.json()?;
        let ip = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .filter_map(|a| a.split('/').next()?.parse::<std::net::IpAddr>().ok())
            .find(std::net::IpAddr::is_ipv4)
            .ok_or_else(|| anyhow!("ADD result of {name} has no IPv4 address: {result}"))?;
        Ok((pod, ip))
    }

    /// Deletes pod `pod` through the plugin (CNI DEL).
    pub fn del_pod(&self, pod: &crate::node::Pod) -> Result<()> {
        let plugin = self.node.host_path("/opt/cni/bin").join("weft");
        let out =
            crate::node::run_plugin(&plugin, "DEL", &pod.call(), &self.netconf()?.to_string())?;
        ensure!(out.success, "DEL of {} failed: {}", pod.name, out.stdout);
        Ok(())
    }

    /// `weftctl ARGS` inside the agent container (as `kubectl exec` would run it).
    pub fn weftctl(&self, args: &[&str]) -> Result<String> {
        let name = self.pod.name_of("weft-agent");
        let mut argv = vec![
            "exec",
            name.as_str(),
            "weftctl",
            "--config",
            "/etc/weft/weft-agent.conf",
        ];
        argv.extend_from_slice(args);
        self.pod.engine.run(&argv)
    }
}

/// A runner's scratch directory (under /var/tmp: the images are too big for a tmpfs) and its
/// podman. Dropping it removes every container and image of that podman, then the directory.
pub struct Scratch {
    /// The directory.
    pub dir: PathBuf,
    /// The podman (storage under `dir/podman`).
    pub engine: Engine,
}

impl Scratch {
    /// A fresh scratch directory and podman.
    pub fn new() -> Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("weft-ds-")
            .tempdir_in("/var/tmp")?
            .keep();
        let engine = Engine::new(&dir.join("podman"))?;
        Ok(Scratch { dir, engine })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self
            .engine
            .output(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.engine.output(&["rmi", "--all", "--force"]);
        crate::containerd::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Nodes on an underlay bridge, the test API server, and the DaemonSet run on every node.
/// Fields drop in order: nodes, API server, underlay, the scratch (podman, directory).
pub struct DaemonSetCluster {
    /// The nodes, index i at position i-1.
    pub nodes: Vec<DsNode>,
    /// The API server (in the underlay namespace, at [`crate::cluster::UNDERLAY_GW`]).
    pub api: crate::apiserver::ApiServer,
    _underlay: NetnsGuard,
    /// The pod template (from build/yamls/weft.yml).
    pub template: PodTemplate,
    /// The podman the pods run in, and the directory everything lives in.
    pub scratch: Scratch,
}

impl DaemonSetCluster {
    /// Starts the underlay, the API server and `nodes` nodes running the DaemonSet with
    /// `image`, and waits until every pod is ready.
    pub fn start(scratch: Scratch, nodes: usize, image: &str) -> Result<Self> {
        use crate::cluster::UNDERLAY_GW;
        let template = PodTemplate::weft()?;
        let dir = scratch.dir.clone();
        let id = format!(
            "{}-{}",
            std::process::id(),
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
                .trim_start_matches("weft-ds-")
        );
        let u = format!("wdu-{id}");
        netns::create(&u)?;
        let underlay = NetnsGuard(u.clone());
        crate::cmd::run("ip", &["-n", &u, "link", "add", "br0", "type", "bridge"])?;
        crate::cmd::run(
            "ip",
            &[
                "-n",
                &u,
                "addr",
                "add",
                &format!("{UNDERLAY_GW}/24"),
                "dev",
                "br0",
            ],
        )?;
        crate::cmd::run("ip", &["-n", &u, "link", "set", "br0", "up"])?;
        let api = crate::apiserver::ApiServer::start_with(crate::apiserver::ApiServerOptions {
            netns: Some(u.clone()),
            listen: format!("{UNDERLAY_GW}:0").parse()?,
            ..Default::default()
        })?;
        let (sa_ns, sa) = crate::apiserver::rbac::weft_agent_service_account();
        let kubeconfig_path = dir.join("kubeconfig");
        api.write_service_account_kubeconfig(&kubeconfig_path, &sa_ns, &sa)?;
        let kubeconfig = std::fs::read_to_string(&kubeconfig_path)?;
        let mut cluster = DaemonSetCluster {
            nodes: Vec::new(),
            api,
            _underlay: underlay,
            template,
            scratch,
        };
        for index in 1..=nodes {
            let ns = format!("wdn-{id}-{index}");
            netns::create(&ns)?;
            let guard = NetnsGuard(ns.clone());
            let port = format!("n{index}");
            let uplink = crate::cluster::UPLINK;
            crate::cmd::run(
                "ip",
                &[
                    "-n", &u, "link", "add", &port, "type", "veth", "peer", "name", uplink,
                    "netns", &ns,
                ],
            )?;
            crate::cmd::run(
                "ip",
                &["-n", &u, "link", "set", &port, "master", "br0", "up"],
            )?;
            for (n, dev) in [(u.as_str(), port.as_str()), (ns.as_str(), uplink)] {
                netns::exec(
                    n,
                    &[
                        "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                    ],
                )?;
            }
            let ip = format!("192.168.60.{}", 10 + index);
            crate::cmd::run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", uplink],
            )?;
            crate::cmd::run("ip", &["-n", &ns, "link", "set", uplink, "up"])?;
            let name = format!("ds-node-{index}");
            let pod_cidr = format!("10.244.{index}.0/24");
            cluster
                .api
                .create_node(serde_json::json!({
                    "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                    "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
                    "status": {"addresses": [
                        {"type": "InternalIP", "address": ip},
                        {"type": "Hostname", "address": name}
                    ]}
                }))
                .map_err(|e| anyhow!("creating node {name}: {e:?}"))?;
            let root = cluster.scratch.dir.join(&name);
            std::fs::create_dir_all(&root)?;
            let node = NodeRoot {
                name,
                netns: ns,
                ip,
                root,
            };
            let conf = ("weft-config".to_string(), "weft-agent.conf".to_string());
            let edits = ConfigEdits {
                fields: vec![
                    (
                        conf.0.clone(),
                        conf.1.clone(),
                        "kubeconfig".into(),
                        "/etc/weft/kubeconfig".into(),
                    ),
                    (
                        conf.0.clone(),
                        conf.1.clone(),
                        "ovsDatapathType".into(),
                        crate::Datapath::current().to_string(),
                    ),
                ],
                files: vec![(conf.0.clone(), "kubeconfig".into(), kubeconfig.clone())],
            };
            let pod = PodRunner::start(
                &cluster.scratch.engine,
                &cluster.template,
                node.clone(),
                image,
                edits,
            )?;
            cluster.nodes.push(DsNode {
                pod,
                node,
                pod_cidr,
                _netns: guard,
            });
        }
        for node in &cluster.nodes {
            node.pod.wait_ready(Duration::from_secs(120))?;
        }
        Ok(cluster)
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> Result<&DsNode> {
        self.nodes
            .get(index - 1)
            .ok_or_else(|| anyhow!("no node {index}"))
    }

    /// Every pod's logs.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.pod.logs())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weft_daemonset_template_is_read_from_the_manifest() {
        let t = PodTemplate::weft().unwrap();
        assert!(t.host_network);
        assert_eq!(t.init_containers.len(), 1);
        assert_eq!(t.init_containers[0].name, "install-cni");
        let names: Vec<&str> = t.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["weft-ovs", "weft-agent"]);
        let agent = &t.containers[1];
        assert!(agent.privileged);
        assert!(agent.env.contains(&(
            "NODE_NAME".to_string(),
            EnvValue::Field("spec.nodeName".into())
        )));
        let ready = agent.readiness.as_ref().unwrap();
        assert_eq!(ready.period, Duration::from_secs(10));
        assert_eq!(ready.failure_threshold, 3);
        assert!(agent
            .mounts
            .iter()
            .any(|m| m.path == "/var/run/netns"
                && m.propagation.as_deref() == Some("HostToContainer")));
        assert!(t.config_maps["weft-config"].contains_key("weft-agent.conf"));
        // Every mounted volume exists; /lib/modules is optional on the node.
        for c in t.init_containers.iter().chain(&t.containers) {
            for m in &c.mounts {
                assert!(t.volumes.contains_key(&m.volume), "{}", m.volume);
            }
        }
        assert_eq!(
            t.volumes["host-lib-modules"],
            Volume::HostPath {
                path: "/lib/modules".into(),
                kind: "DirectoryOrCreate".into()
            }
        );
    }

    #[test]
    fn yaml_fields_are_replaced_or_appended() {
        let text = "a: 1\n# b: x\nb: 2\n";
        assert_eq!(set_yaml_field(text, "b", "3"), "a: 1\n# b: x\nb: 3\n");
        assert_eq!(set_yaml_field(text, "c", "4"), "a: 1\n# b: x\nb: 2\nc: 4\n");
    }
}
