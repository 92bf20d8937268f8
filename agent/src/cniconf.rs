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
    /// Whether a runtime would accept it (parses, has a name and a type or plugins).
    pub valid: bool,
}

impl ConfFile {
    /// Classifies a file by name and contents.
    pub fn parse(name: &str, contents: &str) -> Self {
        let value: Option<Value> = serde_json::from_str(contents).ok();
        let network = value
            .as_ref()
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let has_plugins = value
            .as_ref()
            .and_then(|v| v.get("plugins"))
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty());
        let has_type = value.as_ref().and_then(|v| v.get("type")).is_some();
        let valid = network.is_some()
            && if name.ends_with(".conflist") {
                has_plugins
            } else {
                has_type
            };
        ConfFile {
            name: name.to_string(),
            network,
            valid,
        }
    }
}

/// Whether a runtime considers the file at all (libcni's extensions).
pub fn is_cni_config_name(name: &str) -> bool {
    [".conf", ".conflist", ".json"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The outcome of the load-order analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOrder {
    /// CNI config files in the order a runtime reads them (lexical).
    pub order: Vec<ConfFile>,
    /// The file a runtime (and Multus "auto") would choose: the first valid one.
    pub chosen: Option<String>,
    /// Valid files sorting before Weft's: each would be chosen instead of Weft.
    pub ahead_of_weft: Vec<String>,
}

impl LoadOrder {
    /// Whether Weft's file is the one a runtime would use.
    pub fn weft_wins(&self) -> bool {
        self.chosen.as_deref() == Some(CONFLIST_NAME)
    }
}

/// Orders the files as a runtime does and finds who wins. Pure.
pub fn load_order(mut files: Vec<ConfFile>) -> LoadOrder {
    files.retain(|f| is_cni_config_name(&f.name));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let chosen = files.iter().find(|f| f.valid).map(|f| f.name.clone());
    let ahead_of_weft = files
        .iter()
        .take_while(|f| f.name != CONFLIST_NAME)
        .filter(|f| f.valid)
        .map(|f| f.name.clone())
        .collect();
    LoadOrder {
        order: files,
        chosen,
        ahead_of_weft,
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
            ["00-multus.conf", "05-istio-cni.conflist"]
        );
        assert!(!order.weft_wins());
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
