//! `weftctl supportbundle -o FILE`: the agent's bundle files plus what weftctl checks itself
//! (`check cni`, `check host`), packed as a gzip-compressed tar under `weft-supportbundle/`.
//! The archive is written to a temporary file next to `FILE` and renamed into place.

use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::api::types::BundleFile;

/// Directory every entry of the archive lives in.
pub const PREFIX: &str = "weft-supportbundle";

/// Writes `files` as a tar.gz at `path`; returns the archive's entry names.
pub fn write_archive(path: &Path, files: &[BundleFile]) -> std::io::Result<Vec<String>> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut names = Vec::new();
        for f in files {
            // Names come from the agent: keep them inside the prefix.
            let clean: String = f
                .name
                .split('/')
                .filter(|p| !p.is_empty() && *p != "." && *p != "..")
                .collect::<Vec<_>>()
                .join("/");
            let name = format!("{PREFIX}/{clean}");
            let mut header = tar::Header::new_gnu();
            header.set_size(f.content.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(mtime);
            header.set_cksum();
            tar.append_data(&mut header, &name, f.content.as_bytes())?;
            names.push(name);
        }
        let gz = tar.into_inner()?;
        let mut file = gz.finish()?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(names)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_round_trips_and_stays_inside_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar.gz");
        let files = vec![
            BundleFile {
                name: "agentinfo.json".into(),
                content: "{}\n".into(),
            },
            BundleFile {
                name: "../../etc/evil".into(),
                content: "x".into(),
            },
        ];
        let names = write_archive(&path, &files).unwrap();
        assert_eq!(
            names,
            [
                "weft-supportbundle/agentinfo.json",
                "weft-supportbundle/etc/evil"
            ]
        );
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&path).unwrap(),
        ));
        let mut read = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            read.push((entry.path().unwrap().display().to_string(), text));
        }
        assert_eq!(
            read[0],
            ("weft-supportbundle/agentinfo.json".into(), "{}\n".into())
        );
        assert_eq!(read.len(), 2);
        assert!(!dir.path().join(".b.tar.gz.tmp").exists());
    }
}
