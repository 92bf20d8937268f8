//! The CNI network configuration Weft installs (`10-weft.conflist`) and the load-order analysis
//! behind field report 4: container runtimes and Multus (`multusConfigFile: auto`) take the first
//! valid file of the CNI config directory in lexical order, so any other file sorting before
//! Weft's silently becomes the primary network.
//!
//! Pure parts ([`render_conflist`], [`load_order`]) are separate from the installer
//! ([`install`]), which writes atomically (temp file + fsync + rename) and never touches files it
//! does not own.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use weft_cni::version::CniVersion;

/// File name of Weft's network configuration. "10-" so it sorts before the usual "99-" and
/// distribution defaults, after "00-" files that administrators use on purpose.
pub const CONFLIST_NAME: &str = "10-weft.conflist";
/// The network name in the conflist.
pub const NETWORK_NAME: &str = "weft";
/// Name of the plugin binary.
pub const PLUGIN_BINARY: &str = "weft";
/// Chained plugins Weft knows how to configure.
pub const KNOWN_CHAINED: &[&str] = &["portmap", "bandwidth"];

/// Errors of the installer.
#[derive(Debug, thiserror::Error)]
pub enum CniConfError {
    /// A chained plugin Weft cannot configure.
    #[error("cniChainedPlugins: unknown plugin {0:?} (known: portmap, bandwidth)")]
    UnknownChained(String),
    /// Filesystem failure.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CniConfError + 'a {
    move |source| CniConfError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Inputs of the conflist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflistInput {
    /// Socket the plugin calls.
    pub agent_socket: PathBuf,
    /// Chained plugins, in order (each from [`KNOWN_CHAINED`]).
    pub chained: Vec<String>,
    /// The conflist's `cniVersion` (config key `cniVersion`): the version runtimes ask results
    /// in, and the version every chained plugin must support.
    pub cni_version: CniVersion,
}

/// Renders the conflist. Pure. There is deliberately no MTU in it: the pod MTU comes from the
/// agent's MTU plan at ADD time (field report 1).
pub fn render_conflist(input: &ConflistInput) -> Result<String, CniConfError> {
    let mut plugins = vec![json!({
        "type": PLUGIN_BINARY,
        "agentSocket": input.agent_socket,
    })];
    for name in &input.chained {
        plugins.push(match name.as_str() {
            "portmap" => json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            "bandwidth" => json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            other => return Err(CniConfError::UnknownChained(other.to_string())),
        });
    }
    let conflist = json!({
        "cniVersion": input.cni_version,
        "name": NETWORK_NAME,
        "plugins": plugins,
    });
    let mut text = serde_json::to_string_pretty(&conflist).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

/// One file of the CNI config directory as the load-order analysis sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    /// File name.
    pub name: String,
    /// Network name inside, if the file parses as a CNI config.
    pub network: Option<String>,
    /// Whether libcni accepts it ([`ConfFile::problem`] is `None`).
    pub valid: bool,
    /// Why libcni rejects it, in libcni's terms.
    pub problem: Option<String>,
}

impl ConfFile {
    /// Classifies a file by name and contents as libcni 1.x does: a `.conflist` needs a JSON
    /// object with a string `name`, a string `cniVersion` if any, and a non-empty `plugins`
    /// array whose every entry has a non-empty string `type` (`ConfListFromBytes`); a `.conf` or
    /// `.json` needs a JSON object with a non-empty string `type` (`ConfFromBytes`, and
    /// go-cni's own check).
    pub fn parse(name: &str, contents: &str) -> Self {
        let value: Option<Value> = serde_json::from_str(contents).ok();
        let network = value
            .as_ref()
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let problem = conf_problem(name, value.as_ref());
        ConfFile {
            name: name.to_string(),
            network,
            valid: problem.is_none(),
            problem,
        }
    }
}

fn conf_problem(name: &str, value: Option<&Value>) -> Option<String> {
    let Some(Value::Object(map)) = value else {
        return Some("not a json object".into());
    };
    let has_type = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    };
    if !name.ends_with(".conflist") {
        return (!has_type(&Value::Object(map.clone()))).then(|| "no 'type'".into());
    }
    if !map.get("name").is_some_and(Value::is_string) {
        return Some("no name".into());
    }
    if map.get("cniVersion").is_some_and(|v| !v.is_string()) {
        return Some("cniVersion is not a string".into());
    }
    match map.get("plugins") {
        None => Some("no 'plugins' key".into()),
        Some(Value::Array(plugins)) if plugins.is_empty() => Some("no plugins in list".into()),
        Some(Value::Array(plugins)) => plugins
            .iter()
            .position(|p| !has_type(p))
            .map(|i| format!("plugin {i} has no 'type'")),
        Some(_) => Some("'plugins' is not a list".into()),
    }
}

/// Whether a runtime considers the file at all (libcni's extensions).
pub fn is_cni_config_name(name: &str) -> bool {
    [".conf", ".conflist", ".json"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// A consumer of the CNI config directory, each with its own rule for which file it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Consumer {
    /// containerd's CRI plugin through go-cni (`max_conf_num` 1, the default): the first file
    /// of `.conf`/`.conflist`/`.json` in sorted order; if that file is invalid the load fails
    /// and no network is loaded (every pod fails), the files after it are never read.
    Containerd,
    /// CRI-O through ocicni: the first valid file in sorted order (invalid ones skipped).
    CriO,
    /// Multus with `"multusConfigFile": "auto"`: the first `.conf`/`.conflist` in sorted order
    /// not named `00-multus*`, valid or not (`.json` is not considered).
    MultusAuto,
    /// podman's CNI backend: networks by `name`, not by order; the first valid file declaring
    /// network `weft` is the `weft` network (a later one of the same name is ignored).
    Podman,
}

impl Consumer {
    /// Every consumer, in the order `check cni` lists them.
    pub const ALL: [Consumer; 4] = [
        Consumer::Containerd,
        Consumer::CriO,
        Consumer::MultusAuto,
        Consumer::Podman,
    ];

    /// How the consumer is named in reports.
    pub fn label(self) -> &'static str {
        match self {
            Consumer::Containerd => "containerd (go-cni)",
            Consumer::CriO => "cri-o (ocicni)",
            Consumer::MultusAuto => "multus \"auto\"",
            Consumer::Podman => "podman (network weft)",
        }
    }
}

/// What one consumer makes of the directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerChoice {
    /// The consumer.
    pub consumer: Consumer,
    /// The file it loads, if any.
    pub loads: Option<String>,
    /// Why it loads nothing usable (e.g. containerd stopping at an invalid file).
    pub failure: Option<String>,
}

impl ConsumerChoice {
    /// Whether it loads Weft's file.
    pub fn weft(&self) -> bool {
        self.failure.is_none() && self.loads.as_deref() == Some(CONFLIST_NAME)
    }
}

/// What `consumer` loads from `files` (sorted, CNI config names only). Pure.
pub fn choice(consumer: Consumer, files: &[ConfFile]) -> ConsumerChoice {
    let pick = |file: Option<&ConfFile>, failure_if_invalid: bool| {
        let failure = file.and_then(|f| {
            f.problem
                .as_ref()
                .filter(|_| failure_if_invalid)
                .map(|p| format!("{} is invalid ({p}): nothing is loaded", f.name))
        });
        ConsumerChoice {
            consumer,
            loads: file.map(|f| f.name.clone()),
            failure,
        }
    };
    match consumer {
        Consumer::Containerd => pick(files.first(), true),
        Consumer::CriO => pick(files.iter().find(|f| f.valid), false),
        Consumer::MultusAuto => pick(
            files.iter().find(|f| {
                !f.name.starts_with("00-multus")
                    && (f.name.ends_with(".conf") || f.name.ends_with(".conflist"))
            }),
            true,
        ),
        Consumer::Podman => pick(
            files
                .iter()
                .find(|f| f.valid && f.network.as_deref() == Some(NETWORK_NAME)),
            false,
        ),
    }
}

/// The outcome of the load-order analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOrder {
    /// CNI config files in the order a runtime reads them (lexical).
    pub order: Vec<ConfFile>,
    /// The file containerd would load (the strictest rule: the first file, if valid).
    pub chosen: Option<String>,
    /// Files sorting before Weft's: each keeps containerd from loading Weft's (it loads that
    /// file instead, or nothing if it is invalid), and a valid one also wins in CRI-O.
    pub ahead_of_weft: Vec<String>,
    /// What each consumer loads.
    pub consumers: Vec<ConsumerChoice>,
}

impl LoadOrder {
    /// Whether every consumer loads Weft's file.
    pub fn weft_wins(&self) -> bool {
        self.consumers.iter().all(ConsumerChoice::weft)
    }

    /// One line per consumer that does not load Weft's file, saying what it does instead.
    pub fn problems(&self) -> Vec<String> {
        self.consumers
            .iter()
            .filter(|c| !c.weft())
            .map(|c| match (&c.failure, &c.loads) {
                (Some(failure), _) => format!("{}: {failure}", c.consumer.label()),
                (None, Some(file)) => format!(
                    "{}: loads {file} instead of {CONFLIST_NAME}",
                    c.consumer.label()
                ),
                (None, None) => format!("{}: finds no network", c.consumer.label()),
            })
            .collect()
    }
}

/// Orders the files as a runtime does and finds what each consumer loads. Pure.
pub fn load_order(mut files: Vec<ConfFile>) -> LoadOrder {
    files.retain(|f| is_cni_config_name(&f.name));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let consumers: Vec<ConsumerChoice> = Consumer::ALL.iter().map(|c| choice(*c, &files)).collect();
    let chosen = consumers
        .first()
        .filter(|c| c.failure.is_none())
        .and_then(|c| c.loads.clone());
    let ahead_of_weft = files
        .iter()
        .take_while(|f| f.name != CONFLIST_NAME)
        .map(|f| f.name.clone())
        .collect();
    LoadOrder {
        order: files,
        chosen,
        ahead_of_weft,
        consumers,
    }
}

/// The Multus setting that pins Weft as the cluster network regardless of file order: with
/// `"multusConfigFile": "auto"` Multus takes the file named by `multusMasterCNI` (thick plugin
/// daemon config; `--multus-master-cni-file-name` for the thin plugin) instead of the first one.
pub fn multus_pin_hint(conf_dir: &Path) -> String {
    format!(
        "pin Weft in Multus: \"multusMasterCNI\": \"{CONFLIST_NAME}\" in the thick plugin's daemon config (thin plugin: --multus-master-cni-file-name={CONFLIST_NAME}), with cni config dir {}",
        conf_dir.display()
    )
}

/// Reads the directory for the analysis.
pub fn read_dir(conf_dir: &Path) -> Result<Vec<ConfFile>, CniConfError> {
    let entries = std::fs::read_dir(conf_dir).map_err(io("cannot read directory", conf_dir))?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_cni_config_name(&name) || !entry.path().is_file() {
            continue;
        }
        let contents = std::fs::read_to_string(entry.path()).unwrap_or_default();
        files.push(ConfFile::parse(&name, &contents));
    }
    Ok(files)
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Where the plugin binary was installed (if a source was given).
    pub plugin: Option<PathBuf>,
    /// The conflist written.
    pub conflist: PathBuf,
    /// Whether the conflist content changed.
    pub conflist_changed: bool,
    /// The load order afterwards.
    pub order: LoadOrder,
}

/// Installs the plugin binary (copied from `plugin_source` if given) into `bin_dir` and writes
/// the conflist into `conf_dir`, both atomically. Warns (tracing) about every file that would be
/// chosen before Weft's.
pub fn install(
    input: &ConflistInput,
    plugin_source: Option<&Path>,
    bin_dir: &Path,
    conf_dir: &Path,
) -> Result<InstallReport, CniConfError> {
    let text = render_conflist(input)?;
    let plugin = match plugin_source {
        Some(source) => {
            let bytes = std::fs::read(source).map_err(io("cannot read plugin", source))?;
            let target = bin_dir.join(PLUGIN_BINARY);
            write_atomic(&target, &bytes, 0o755)?;
            Some(target)
        }
        None => None,
    };
    let conflist = conf_dir.join(CONFLIST_NAME);
    let conflist_changed = std::fs::read_to_string(&conflist).ok().as_deref() != Some(&text);
    if conflist_changed {
        write_atomic(&conflist, text.as_bytes(), 0o644)?;
    }
    let order = load_order(read_dir(conf_dir)?);
    for name in &order.ahead_of_weft {
        tracing::warn!(
            file = %conf_dir.join(name).display(),
            "CNI config {name} sorts before {CONFLIST_NAME}: container runtimes and Multus \"auto\" would use it instead of Weft; {}",
            multus_pin_hint(conf_dir)
        );
    }
    Ok(InstallReport {
        plugin,
        conflist,
        conflist_changed,
        order,
    })
}

/// The plugins a CRI runtime runs besides the conflist's: `loopback` for every sandbox's `lo`.
pub const RUNTIME_PLUGINS: &[&str] = &["loopback"];

/// Installs the chained plugins the conflist references (`input.chained`) and the ones CRI
/// runtimes need ([`RUNTIME_PLUGINS`]) from `source_dir` into `bin_dir`, each only when
/// `bin_dir` has none yet (a node's own copy is left alone), exec-safely as [`write_atomic`]
/// does. Returns the paths installed.
pub fn install_chained(
    input: &ConflistInput,
    source_dir: &Path,
    bin_dir: &Path,
) -> Result<Vec<PathBuf>, CniConfError> {
    let mut installed = Vec::new();
    let names = input
        .chained
        .iter()
        .map(String::as_str)
        .chain(RUNTIME_PLUGINS.iter().copied());
    for name in names {
        let target = bin_dir.join(name);
        if target.exists() {
            continue;
        }
        let source = source_dir.join(name);
        let bytes = std::fs::read(&source).map_err(io("cannot read chained plugin", &source))?;
        write_atomic(&target, &bytes, 0o755)?;
        installed.push(target);
    }
    Ok(installed)
}

/// Writes `bytes` to `path` via a temporary file in the same directory, fsync and rename, so
/// readers see the old or the new content, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CniConfError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A leading dot and no CNI extension: a runtime never reads the temporary file. The pid
    // keeps two installers running at once from writing into each other's file.
    let tmp = dir.join(format!(".{file_name}.{}.weft-tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
        file.write_all(bytes).map_err(io("cannot write", &tmp))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io("cannot set permissions of", &tmp))?;
        file.sync_all().map_err(io("cannot sync", &tmp))?;
        // Closed before the rename: exec(2) of a file that some process still has open for
        // writing fails with ETXTBSY ("Text file busy"), and runtimes exec the plugin at any
        // moment once the new file has its name.
        drop(file);
        std::fs::rename(&tmp, path).map_err(io("cannot rename into", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(chained: &[&str]) -> ConflistInput {
        ConflistInput {
            agent_socket: "/var/run/weft/cni.sock".into(),
            chained: chained.iter().map(|s| s.to_string()).collect(),
            cni_version: CniVersion::V1_0_0,
        }
    }

    #[test]
    fn conflist_has_weft_first_and_no_mtu() {
        let text = render_conflist(&input(&["portmap", "bandwidth"])).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], NETWORK_NAME);
        let types: Vec<_> = v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["weft", "portmap", "bandwidth"]);
        assert_eq!(v["plugins"][0]["agentSocket"], "/var/run/weft/cni.sock");
        assert!(!text.to_lowercase().contains("mtu"), "{text}");
    }

    #[test]
    fn unknown_chained_plugin_is_named() {
        let err = render_conflist(&input(&["flannel"])).unwrap_err();
        assert!(err.to_string().contains("flannel"), "{err}");
    }

    #[test]
    fn load_order_finds_files_that_beat_weft() {
        let weft = render_conflist(&input(&[])).unwrap();
        let files = vec![
            ConfFile::parse("10-weft.conflist", &weft),
            ConfFile::parse(
                "05-istio-cni.conflist",
                r#"{"cniVersion":"1.0.0","name":"istio","plugins":[{"type":"istio-cni"}]}"#,
            ),
            ConfFile::parse("01-broken.conf", "{not json"),
            ConfFile::parse("00-multus.conf", r#"{"name":"multus","type":"multus"}"#),
            ConfFile::parse("99-loopback.conf", r#"{"name":"lo","type":"loopback"}"#),
            ConfFile::parse("README", "not a config"),
        ];
        let order = load_order(files);
        let names: Vec<_> = order.order.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "00-multus.conf",
                "01-broken.conf",
                "05-istio-cni.conflist",
                "10-weft.conflist",
                "99-loopback.conf"
            ]
        );
        assert_eq!(order.chosen.as_deref(), Some("00-multus.conf"));
        assert_eq!(
            order.ahead_of_weft,
            ["00-multus.conf", "01-broken.conf", "05-istio-cni.conflist"]
        );
        assert!(!order.weft_wins());
        let loads: Vec<_> = order
            .consumers
            .iter()
            .map(|c| c.loads.as_deref().unwrap_or("-"))
            .collect();
        // containerd the first file; CRI-O the first valid; Multus skips 00-multus* and takes
        // the next one, broken as it is; podman the network named weft.
        assert_eq!(
            loads,
            [
                "00-multus.conf",
                "00-multus.conf",
                "01-broken.conf",
                "10-weft.conflist"
            ]
        );
        assert!(order.consumers[2].failure.is_some());
    }

    /// One case per rule of `check cni` (issue 13 part 4).
    #[test]
    fn each_consumer_follows_its_own_rule() {
        let weft = render_conflist(&input(&[])).unwrap();
        let load = |files: &[(&str, &str)]| {
            load_order(files.iter().map(|(n, c)| ConfFile::parse(n, c)).collect())
        };
        let weft_of = |order: &LoadOrder| -> Vec<bool> {
            order.consumers.iter().map(ConsumerChoice::weft).collect()
        };

        // An invalid file before Weft's: containerd stops there (nothing loaded), CRI-O skips
        // it, Multus takes it (and fails), podman finds weft by name.
        let order = load(&[
            ("01-broken.conflist", "{\"name\":\"x\""),
            ("10-weft.conflist", &weft),
        ]);
        assert_eq!(weft_of(&order), [false, true, false, true]);
        assert!(order.consumers[0]
            .failure
            .as_deref()
            .unwrap()
            .contains("01-broken.conflist is invalid"));
        assert_eq!(order.chosen, None);
        assert!(!order.weft_wins());
        assert!(
            order.problems()[0].starts_with("containerd (go-cni): 01-broken.conflist is invalid"),
            "{:?}",
            order.problems()
        );

        // A valid foreign file before Weft's: containerd, CRI-O and Multus load it.
        let order = load(&[
            (
                "05-istio.conflist",
                r#"{"name":"istio","plugins":[{"type":"istio-cni"}]}"#,
            ),
            ("10-weft.conflist", &weft),
        ]);
        assert_eq!(weft_of(&order), [false, false, false, true]);

        // A .json file before Weft's: containerd and CRI-O read it, Multus does not.
        let order = load(&[
            ("05-x.json", r#"{"name":"x","type":"bridge"}"#),
            ("10-weft.conflist", &weft),
        ]);
        assert_eq!(weft_of(&order), [false, false, true, true]);

        // Multus's own 00-multus file is skipped by Multus only.
        let order = load(&[
            (
                "00-multus.conf",
                r#"{"name":"multus-cni-network","type":"multus"}"#,
            ),
            ("10-weft.conflist", &weft),
        ]);
        assert_eq!(weft_of(&order), [false, false, true, true]);

        // Weft's own file truncated: nobody loads a working Weft.
        let order = load(&[("10-weft.conflist", &weft[..weft.len() / 2])]);
        assert_eq!(weft_of(&order), [false, false, false, false]);

        // Another file declaring network weft before Weft's shadows it for podman too.
        let order = load(&[
            (
                "05-fake.conflist",
                r#"{"name":"weft","plugins":[{"type":"bridge"}]}"#,
            ),
            ("10-weft.conflist", &weft),
        ]);
        assert_eq!(weft_of(&order), [false, false, false, false]);

        // Files after Weft's change nothing; a conflist with an untyped plugin is invalid.
        let order = load(&[
            ("10-weft.conflist", &weft),
            ("99-bad.conflist", r#"{"name":"b","plugins":[{}]}"#),
        ]);
        assert!(order.weft_wins());
        assert_eq!(
            order.order[1].problem.as_deref(),
            Some("plugin 0 has no 'type'")
        );
    }

    #[test]
    fn weft_alone_wins() {
        let weft = render_conflist(&input(&[])).unwrap();
        let order = load_order(vec![
            ConfFile::parse("10-weft.conflist", &weft),
            ConfFile::parse("99-loopback.conf", r#"{"name":"lo","type":"loopback"}"#),
        ]);
        assert!(order.weft_wins());
        assert!(order.ahead_of_weft.is_empty());
    }

    #[test]
    fn install_is_atomic_idempotent_and_leaves_foreign_files_alone() {
        let root = tempfile::tempdir().unwrap();
        let conf = root.path().join("net.d");
        let bin = root.path().join("bin");
        let src = root.path().join("weft-src");
        std::fs::write(&src, b"#!/bin/sh\n").unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        let foreign = r#"{"cniVersion":"1.0.0","name":"istio","plugins":[{"type":"istio-cni"}]}"#;
        std::fs::write(conf.join("05-istio.conflist"), foreign).unwrap();

        let first = install(&input(&["portmap"]), Some(&src), &bin, &conf).unwrap();
        assert!(first.conflist_changed);
        assert_eq!(first.order.ahead_of_weft, ["05-istio.conflist"]);
        assert_eq!(std::fs::read(bin.join("weft")).unwrap(), b"#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(bin.join("weft"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        let second = install(&input(&["portmap"]), None, &bin, &conf).unwrap();
        assert!(!second.conflist_changed, "second run changes nothing");
        assert_eq!(
            std::fs::read_to_string(conf.join("05-istio.conflist")).unwrap(),
            foreign
        );
        let leftovers: Vec<_> = std::fs::read_dir(&conf)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("weft-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn chained_plugins_are_installed_only_when_missing() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["portmap", "bandwidth", "loopback"] {
            std::fs::write(src.join(name), format!("#!/bin/sh\n# {name}\n")).unwrap();
        }
        std::fs::write(bin.join("portmap"), b"node's own").unwrap();
        let installed = install_chained(&input(&["portmap", "bandwidth"]), &src, &bin).unwrap();
        assert_eq!(installed, [bin.join("bandwidth"), bin.join("loopback")]);
        assert_eq!(std::fs::read(bin.join("portmap")).unwrap(), b"node's own");
        assert_eq!(
            std::fs::read_to_string(bin.join("loopback")).unwrap(),
            "#!/bin/sh\n# loopback\n"
        );
        let again = install_chained(&input(&["portmap", "bandwidth"]), &src, &bin).unwrap();
        assert!(again.is_empty(), "{again:?}");
        let missing = install_chained(
            &input(&["portmap"]),
            &root.path().join("nowhere"),
            &root.path().join("bin2"),
        );
        assert!(
            matches!(&missing, Err(CniConfError::Io { path, .. }) if path.ends_with("portmap")),
            "{missing:?}"
        );
    }
}
