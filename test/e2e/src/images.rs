//! Test container images, built locally (no registry is reachable from the test machines): an
//! OCI image layout tar holding one layer with Debian's static busybox (`busybox-static`) and a
//! symlink per applet in `/bin`. Its default command sleeps, so the same image serves as the
//! containerd sandbox ("pause") image and as the test containers' image (which name their own
//! commands). Import it with `ctr -n NS images import` or `podman load`.
//!
//! The tar is content-addressed: it is written once per distinct busybox binary under
//! `$TMPDIR/weft-e2e-images/` (atomically, so parallel tests share it) and reused; the copies
//! the runtimes import live in their own test directories and go with them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The busybox binary the image is made of (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";
/// The image's name (a domain with a dot, so no runtime prefixes `docker.io/library/`).
pub const IMAGE_NAME: &str = "weft.test/busybox:1";

/// A built image.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The OCI layout tar.
    pub tar: PathBuf,
    /// The image's name ([`IMAGE_NAME`]).
    pub name: String,
    /// The config digest (`sha256:...`): the image id runtimes show.
    pub id: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(0);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mtime(0);
    tar.append_data(&mut header, path, std::io::empty())?;
    Ok(())
}

fn append_symlink(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(0);
    header.set_mode(0o777);
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mtime(0);
    tar.append_link(&mut header, path, target)?;
    Ok(())
}

/// The root filesystem layer: `/bin/busybox`, one symlink per applet, the usual empty
/// directories. Deterministic (fixed mtimes, sorted applets), so its digest depends only on the
/// busybox binary.
fn rootfs_layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!("cannot read {BUSYBOX} (build/install-deps installs busybox-static)")
    })?;
    let list = crate::cmd::run(BUSYBOX, &["--list"])?;
    let mut applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    applets.sort_unstable();
    applets.dedup();
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp", "var", "run"] {
        append_dir(&mut tar, dir)?;
    }
    append_file(&mut tar, "bin/busybox", &busybox, 0o755)?;
    for applet in applets {
        append_symlink(&mut tar, &format!("bin/{applet}"), "busybox")?;
    }
    Ok(tar.into_inner()?)
}

/// Builds (or reuses) the busybox test image.
pub fn busybox() -> Result<TestImage> {
    let layer = rootfs_layer()?;
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sleep", "1000000"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    }))?;
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            // containerd's importer names the image after the first, podman after the second.
            "annotations": {
                "io.containerd.image.name": IMAGE_NAME,
                "org.opencontainers.image.ref.name": IMAGE_NAME,
            },
        }],
    }))?;
    let image = TestImage {
        tar: cache_dir().join(format!("busybox-{manifest_digest}.tar")),
        name: IMAGE_NAME.to_string(),
        id: format!("sha256:{config_digest}"),
    };
    if image.tar.exists() {
        return Ok(image);
    }
    let mut tar = tar::Builder::new(Vec::new());
    append_file(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    append_file(&mut tar, "index.json", &index, 0o644)?;
    append_dir(&mut tar, "blobs")?;
    append_dir(&mut tar, "blobs/sha256")?;
    for (digest, bytes) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        append_file(&mut tar, &format!("blobs/sha256/{digest}"), bytes, 0o644)?;
    }
    write_atomic(&image.tar, &tar.into_inner()?)?;
    Ok(image)
}

fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("weft-e2e-images")
}

/// Writes via a temporary file unique to this process and a rename, so tests building the same
/// image in parallel never see a partial tar.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("image path has no parent")?;
    std::fs::create_dir_all(dir)?;
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write image {}", path.display()))
}
