//! The site carried by a release executable: a tar archive appended to the
//! ELF file, then its length and a magic string. The kernel loads only what
//! the ELF headers name, so the bytes after it cost nothing until the server
//! reads them at start, from `/proc/self/exe`, which is the running file
//! even after an upgrade replaced it on disk.
//!
//! `opsdeck embed-site --site DIR --out FILE` writes FILE: this executable
//! (without any site it already carries) followed by the archive of DIR,
//! each file compressed once, at the highest effort. Why appended rather
//! than compiled in (`include_dir!`, rust-embed): cargo-leptos builds the
//! server and the wasm at the same time, so a compile-time embed can see an
//! old or missing site, and the fix, building the server a second time, costs
//! a compile and a link in every release build; appending costs a copy.
//!
//! N.B.: `strip` and anything else that rewrites the ELF file drops the
//! archive: strip before `embed-site`, never after.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;

use super::encode::Effort;
use super::{SiteError, SiteFile};

/// Ends every executable that carries a site.
const MAGIC: &[u8; 16] = b"opsdeck-site-v1\n";
/// The trailer: the archive's length (u64, little-endian), then [`MAGIC`].
const TRAILER: usize = 8 + MAGIC.len();

const SELF: &str = "/proc/self/exe";

/// What [`pack`] wrote.
#[derive(Debug)]
pub struct Packed {
    pub files: usize,
    /// Bytes of the site as it was on disk.
    pub site_bytes: u64,
    /// Bytes of the appended archive (with the compressed forms).
    pub archive_bytes: u64,
}

/// Whether this executable carries a site.
pub fn has_own() -> bool {
    File::open(SELF)
        .and_then(|mut f| trailer(&mut f))
        .is_ok_and(|t| t.is_some())
}

/// The archive length from `f`'s trailer, if it has one.
fn trailer(f: &mut File) -> std::io::Result<Option<u64>> {
    let size = f.metadata()?.len();
    if size < TRAILER as u64 {
        return Ok(None);
    }
    f.seek(SeekFrom::End(-(TRAILER as i64)))?;
    let mut t = [0u8; TRAILER];
    f.read_exact(&mut t)?;
    if &t[8..] != MAGIC {
        return Ok(None);
    }
    let len = u64::from_le_bytes(t[..8].try_into().unwrap_or_default());
    if len > size - TRAILER as u64 {
        return Err(std::io::Error::other(
            "the site archive is longer than the file",
        ));
    }
    Ok(Some(len))
}

/// The files of the site this executable carries.
pub fn read_own() -> Result<Vec<SiteFile>, SiteError> {
    let bad = |e: std::io::Error| SiteError::Embedded(format!("{SELF}: {e}"));
    let mut f = File::open(SELF).map_err(bad)?;
    let Some(len) = trailer(&mut f).map_err(bad)? else {
        return Err(SiteError::Embedded(
            "this executable carries no site (it was not made by `opsdeck embed-site`)".into(),
        ));
    };
    f.seek(SeekFrom::End(-((len as i64) + TRAILER as i64)))
        .map_err(bad)?;
    let mut tar = vec![0u8; len as usize];
    f.read_exact(&mut tar).map_err(bad)?;
    unpack(&tar)
}

/// The files of an archive written by [`pack`].
fn unpack(tar: &[u8]) -> Result<Vec<SiteFile>, SiteError> {
    let bad = |e: std::io::Error| SiteError::Embedded(format!("the site archive: {e}"));
    let mut files: Vec<SiteFile> = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.to_string_lossy().to_string();
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(bad)?;
        let data = Bytes::from(data);
        let Some((form, path)) = name.split_once('/') else {
            return Err(SiteError::Embedded(format!("unexpected entry `{name}`")));
        };
        // N.B.: `pack` writes each file's identity form before the others.
        match form {
            "identity" => files.push(SiteFile {
                path: path.to_string(),
                identity: data,
                gzip: None,
                br: None,
            }),
            "gzip" | "br" => {
                let Some(file) = files.iter_mut().rev().find(|f| f.path == path) else {
                    return Err(SiteError::Embedded(format!("`{name}` before its file")));
                };
                if form == "gzip" {
                    file.gzip = Some(data);
                } else {
                    file.br = Some(data);
                }
            }
            _ => return Err(SiteError::Embedded(format!("unexpected entry `{name}`"))),
        }
    }
    Ok(files)
}

/// The tar archive of `files`: each file's identity form, then its
/// compressed ones.
fn archive(files: &[SiteFile]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for f in files {
        let forms = [
            ("identity", Some(&f.identity)),
            ("gzip", f.gzip.as_ref()),
            ("br", f.br.as_ref()),
        ];
        for (form, data) in forms {
            let Some(data) = data else { continue };
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            // N.B.: no time stamps, so the same site packs to the same bytes.
            header.set_mtime(0);
            builder.append_data(&mut header, format!("{form}/{}", f.path), &data[..])?;
        }
    }
    builder.into_inner()
}

/// Writes `out`: this executable followed by the site in `site_dir`.
pub fn pack(site_dir: &Path, out: &Path) -> Result<Packed, String> {
    let files = super::read_dir(site_dir, Effort::Best).map_err(|e| e.to_string())?;
    if !files
        .iter()
        .any(|f| f.path == format!("pkg/{}.wasm", super::OUTPUT_NAME))
    {
        return Err(format!(
            "{}: no pkg/{}.wasm: is this cargo-leptos' site directory, built?",
            site_dir.display(),
            super::OUTPUT_NAME
        ));
    }
    let mut exe = File::open(SELF).map_err(|e| format!("{SELF}: {e}"))?;
    let carried = trailer(&mut exe).map_err(|e| format!("{SELF}: {e}"))?;
    let own_len = exe.metadata().map_err(|e| format!("{SELF}: {e}"))?.len()
        - carried.map_or(0, |len| len + TRAILER as u64);

    let site_bytes = files.iter().map(|f| f.identity.len() as u64).sum();
    let tar = archive(&files).map_err(|e| format!("archiving the site: {e}"))?;

    let tmp = out.with_extension("part");
    let mut write = || -> std::io::Result<()> {
        let mut w = File::create(&tmp)?;
        exe.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut (&mut exe).take(own_len), &mut w)?;
        w.write_all(&tar)?;
        w.write_all(&(tar.len() as u64).to_le_bytes())?;
        w.write_all(MAGIC)?;
        w.sync_all()?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Packed {
        files: files.len(),
        site_bytes,
        archive_bytes: tar.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    #[test]
    fn an_archive_gives_back_every_file_in_every_form() {
        let files = vec![
            encode::compress(
                "pkg/opsdeck.js".into(),
                Bytes::from("let a = 1;\n".repeat(200)),
                Effort::Fast,
            ),
            encode::compress(
                "favicon.ico".into(),
                Bytes::from_static(b"\x00\x01"),
                Effort::Fast,
            ),
        ];
        let back = unpack(&archive(&files).unwrap()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].identity, files[0].identity);
        assert_eq!(back[0].br, files[0].br);
        assert!(back[0].gzip.is_some() && back[0].br.is_some());
        assert_eq!(back[1].path, "favicon.ico");
        assert!(back[1].gzip.is_none());
    }
}
