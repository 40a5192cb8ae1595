//! The front-end opsdeck serves: the site cargo-leptos builds (the wasm,
//! its JS glue and the CSS under `pkg/`, and the `public/` files: favicons,
//! `xterm-lazy.mjs`, xterm.js under `vendor/`), held in memory and served
//! from there.
//!
//! Where it comes from ([`SiteSource`]): a release binary carries it,
//! appended to the executable by `opsdeck embed-site` ([`archive`]); a
//! directory (`[server].site_root`, `--site-root` or `LEPTOS_SITE_ROOT`,
//! which cargo-leptos sets) overrides that for development.
//!
//! How it is served ([`Site::respond`]):
//! - every file answers under its plain path (`/pkg/opsdeck.wasm`) and
//!   under a content-hashed one (`/pkg/opsdeck.3f9a….wasm`). Pages link the
//!   hashed names ([`Site::urls`], the `output_name` Leptos' hydration
//!   scripts use), which never change content: `Cache-Control: public,
//!   max-age=31536000, immutable`. A plain name may change with an upgrade:
//!   `no-cache` with an `ETag`, so a browser revalidates it (304) — these are
//!   the names files refer to among themselves (xterm-lazy.mjs's imports,
//!   the wasm-bindgen snippets), which no page renders;
//! - precompressed: each compressible file is held as brotli and gzip too,
//!   and the best encoding the request's `Accept-Encoding` allows is sent
//!   as it is (no compression per request).
//!
//! N.B.: the JS, wasm and CSS of `pkg/` share one hash, of the three
//! together: Leptos' `<HydrationScripts>` names the JS and the wasm after
//! one `output_name`, and the shell names the CSS after it too.

pub mod archive;
mod encode;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use encode::Effort;

/// The name cargo-leptos gives the JS, wasm and CSS under `pkg/`
/// (`name` in the workspace's `[package.metadata.leptos]`).
pub const OUTPUT_NAME: &str = "opsdeck";

/// `Cache-Control` of a content-hashed name.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Where the site is read from at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteSource {
    /// The archive appended to this executable.
    Embedded,
    /// A site directory (development: cargo-leptos' `target/site`).
    Dir(PathBuf),
    /// Nothing: pages render, but have no styles and never hydrate.
    None,
}

/// Why the site could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot read the site directory {}: {source}; build it with `cargo leptos build` or set [server].site_root", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the site carried by this executable: {0}")]
    Embedded(String),
}

/// One file of the site, in each encoding held.
#[derive(Debug)]
pub struct Asset {
    content_type: HeaderValue,
    /// Hex SHA-256 of the content, first 16 digits (64 bits).
    hash: String,
    identity: Bytes,
    gzip: Option<Bytes>,
    br: Option<Bytes>,
}

impl Asset {
    fn new(path: &str, identity: Bytes, gzip: Option<Bytes>, br: Option<Bytes>) -> Asset {
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let content_type = match mime.essence_str() {
            // Browsers load modules only with a JavaScript type.
            "application/javascript" | "text/javascript" => "text/javascript; charset=utf-8",
            t if t.starts_with("text/") => {
                return Asset::typed(&format!("{t}; charset=utf-8"), identity, gzip, br)
            }
            t => t,
        };
        Asset::typed(content_type, identity, gzip, br)
    }

    fn typed(content_type: &str, identity: Bytes, gzip: Option<Bytes>, br: Option<Bytes>) -> Asset {
        let hash = content_hash(&identity);
        Asset {
            content_type: HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            hash,
            identity,
            gzip,
            br,
        }
    }
}

/// A file as held: its path in the site, its content in each encoding.
#[derive(Debug, Clone)]
pub struct SiteFile {
    /// Relative to the site root, `/`-separated (`pkg/opsdeck.wasm`).
    pub path: String,
    pub identity: Bytes,
    pub gzip: Option<Bytes>,
    pub br: Option<Bytes>,
}

#[derive(Debug, Clone)]
struct Entry {
    asset: Arc<Asset>,
    immutable: bool,
}

/// The site, in memory.
#[derive(Debug, Default)]
pub struct Site {
    /// By URL path, plain and hashed.
    entries: HashMap<String, Entry>,
    /// Plain URL path → hashed URL path.
    urls: HashMap<String, String>,
    /// `opsdeck.<hash>` when the site has the three `pkg/` files, else
    /// `opsdeck`.
    output_name: String,
    source: Option<SiteSource>,
}

impl Site {
    /// Loads the site from `source`.
    pub fn load(source: &SiteSource) -> Result<Site, SiteError> {
        let files = match source {
            SiteSource::None => Vec::new(),
            SiteSource::Embedded => archive::read_own()?,
            SiteSource::Dir(dir) => read_dir(dir, Effort::Fast)?,
        };
        let mut site = Site::from_files(files);
        site.source = Some(source.clone());
        Ok(site)
    }

    /// The site made of `files`.
    pub fn from_files(files: Vec<SiteFile>) -> Site {
        let mut site = Site {
            output_name: OUTPUT_NAME.to_string(),
            ..Site::default()
        };
        let pkg_hash = pkg_hash(|path| {
            files
                .iter()
                .find(|f| f.path == path)
                .map(|f| &f.identity[..])
        });
        if let Some(hash) = &pkg_hash {
            site.output_name = format!("{OUTPUT_NAME}.{hash}");
        }
        for f in files {
            let plain = format!("/{}", f.path);
            let asset = Arc::new(Asset::new(&f.path, f.identity, f.gzip, f.br));
            let in_trio = pkg_hash.is_some()
                && ["js", "wasm", "css"]
                    .iter()
                    .any(|ext| f.path == format!("pkg/{OUTPUT_NAME}.{ext}"));
            let hashed = if in_trio {
                let ext = f.path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
                format!("/pkg/{}.{ext}", site.output_name)
            } else {
                hashed_path(&plain, &asset.hash)
            };
            site.entries.insert(
                hashed.clone(),
                Entry {
                    asset: asset.clone(),
                    immutable: true,
                },
            );
            site.entries.insert(
                plain.clone(),
                Entry {
                    asset,
                    immutable: false,
                },
            );
            site.urls.insert(plain, hashed);
        }
        site
    }

    /// The `output_name` to give Leptos: `opsdeck.<hash>`.
    pub fn output_name(&self) -> &str {
        &self.output_name
    }

    /// Plain URL path → content-hashed URL path, for the shell's links.
    pub fn urls(&self) -> HashMap<String, String> {
        self.urls.clone()
    }

    /// Where it was loaded from.
    pub fn source(&self) -> Option<&SiteSource> {
        self.source.as_ref()
    }

    /// How many files it has.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The response for a request of `path`, if it names a file of the site.
    pub fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let entry = self.entries.get(path)?;
        let asset = &entry.asset;
        let etag = format!("W/\"{}\"", asset.hash);
        let cache = if entry.immutable {
            IMMUTABLE
        } else {
            "no-cache"
        };
        let mut res = Response::builder()
            .header(ETAG, &etag)
            .header(CACHE_CONTROL, cache);
        if asset.gzip.is_some() || asset.br.is_some() {
            res = res.header(VARY, "accept-encoding");
        }
        if if_none_match(headers, &asset.hash) {
            return res
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .ok();
        }
        let (body, encoding) = match encode::choose(headers.get(ACCEPT_ENCODING), asset) {
            encode::Choice::Br => (asset.br.clone(), Some("br")),
            encode::Choice::Gzip => (asset.gzip.clone(), Some("gzip")),
            encode::Choice::Identity => (Some(asset.identity.clone()), None),
        };
        let body = body.unwrap_or_else(|| asset.identity.clone());
        if let Some(encoding) = encoding {
            res = res.header(CONTENT_ENCODING, encoding);
        }
        res = res
            .header(CONTENT_TYPE, asset.content_type.clone())
            .header(CONTENT_LENGTH, body.len());
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body)
        };
        res.status(StatusCode::OK).body(body).ok()
    }
}

/// Hex SHA-256 of `data`, first 16 digits (64 bits): a file's hash.
fn content_hash(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..8])
}

/// The one hash of the `pkg/` trio (JS, wasm, CSS), given each file's
/// content by its path; `None` unless all three are there.
fn pkg_hash<'a>(content: impl Fn(&str) -> Option<&'a [u8]>) -> Option<String> {
    let mut h = Sha256::new();
    for ext in ["js", "wasm", "css"] {
        let body = content(&format!("pkg/{OUTPUT_NAME}.{ext}"))?;
        h.update((body.len() as u64).to_le_bytes());
        h.update(body);
    }
    Some(hex::encode(&h.finalize()[..8]))
}

/// The loader of the wasm parts that load when a page needs them, which
/// cargo-leptos writes beside the main JS in a `--split` build.
const SPLIT_LOADER: &str = "pkg/__wasm_split.______________________.js";

/// Points the split loader at the names pages use.
///
/// The loader imports the main JS module to reach the running wasm (its
/// memory and function table): by its plain name, `./opsdeck.js`, while the
/// page loaded it as `opsdeck.<hash>.js` — to the browser another module,
/// a second copy of the glue with no wasm behind it, so no part could
/// load. It becomes the hashed name. Each part it fetches (`./chunk_3.wasm`,
/// `./split_….wasm`) becomes its hashed name too, cached for good like the
/// main wasm, and never a part of another build mixed with this one.
///
/// The loader itself keeps its plain name (revalidated): the main JS
/// imports it by that name.
fn link_split_loader(files: &mut [(String, Bytes)]) {
    let Some(hash) = pkg_hash(|path| {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, body)| &body[..])
    }) else {
        return;
    };
    let parts: Vec<(String, String)> = files
        .iter()
        .filter_map(|(path, body)| {
            let name = path.strip_prefix("pkg/")?;
            let stem = name.strip_suffix(".wasm")?;
            (stem != OUTPUT_NAME && !stem.contains('/')).then(|| {
                (
                    format!("\"./{name}\""),
                    format!("\"./{stem}.{}.wasm\"", content_hash(body)),
                )
            })
        })
        .collect();
    let Some((_, loader)) = files.iter_mut().find(|(p, _)| p == SPLIT_LOADER) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(loader) else {
        return;
    };
    let mut text = text.replace(
        &format!("\"./{OUTPUT_NAME}.js\""),
        &format!("\"./{OUTPUT_NAME}.{hash}.js\""),
    );
    for (plain, hashed) in &parts {
        text = text.replace(plain, hashed);
    }
    *loader = Bytes::from(text);
}

/// `/dir/name.ext` → `/dir/name.<hash>.ext` (`/dir/name.<hash>` without an
/// extension).
fn hashed_path(path: &str, hash: &str) -> String {
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{dir}/{stem}.{hash}.{ext}"),
        _ => format!("{dir}/{file}.{hash}"),
    }
}

fn if_none_match(headers: &HeaderMap, hash: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == hash || t == "*")
}

/// Every file under `dir`, compressed with `effort` (the split loader
/// linked to the hashed names first: [`link_split_loader`]).
pub fn read_dir(dir: &Path, effort: Effort) -> Result<Vec<SiteFile>, SiteError> {
    let err = |source| SiteError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut raw = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(err)? {
            let entry = entry.map_err(err)?;
            let path = entry.path();
            let kind = entry.file_type().map_err(err)?;
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() || kind.is_symlink() {
                let Ok(rel) = path.strip_prefix(dir) else {
                    continue;
                };
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let identity = Bytes::from(std::fs::read(&path).map_err(err)?);
                raw.push((rel, identity));
            }
        }
    }
    link_split_loader(&mut raw);
    let mut out: Vec<SiteFile> = raw
        .into_iter()
        .map(|(rel, identity)| encode::compress(rel, identity, effort))
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_name_keeps_the_extension() {
        assert_eq!(hashed_path("/favicon.ico", "ab12"), "/favicon.ab12.ico");
        assert_eq!(
            hashed_path("/vendor/xterm/addon-fit.mjs", "ab12"),
            "/vendor/xterm/addon-fit.ab12.mjs"
        );
        assert_eq!(hashed_path("/LICENSE", "ab12"), "/LICENSE.ab12");
        assert_eq!(hashed_path("/.hidden", "ab12"), "/.hidden.ab12");
    }

    #[test]
    fn the_pkg_files_share_one_hash_that_changes_with_any_of_them() {
        let file = |path: &str, body: &'static [u8]| SiteFile {
            path: path.into(),
            identity: Bytes::from_static(body),
            gzip: None,
            br: None,
        };
        let site = |wasm: &'static [u8]| {
            Site::from_files(vec![
                file("pkg/opsdeck.js", b"js"),
                file("pkg/opsdeck.wasm", wasm),
                file("pkg/opsdeck.css", b"css"),
                file("favicon.ico", b"ico"),
            ])
        };
        let a = site(b"wasm 1");
        let b = site(b"wasm 2");
        assert_ne!(a.output_name(), b.output_name());
        assert!(a.output_name().starts_with("opsdeck."));
        let urls = a.urls();
        for ext in ["js", "wasm", "css"] {
            assert_eq!(
                urls[&format!("/pkg/opsdeck.{ext}")],
                format!("/pkg/{}.{ext}", a.output_name())
            );
        }
        assert_eq!(a.urls()["/favicon.ico"], b.urls()["/favicon.ico"]);
        assert_eq!(Site::from_files(vec![]).output_name(), "opsdeck");
    }

    #[test]
    fn the_split_loader_imports_the_hashed_main_js_and_fetches_hashed_parts() {
        let loader = "import { initSync } from \"./opsdeck.js\";\n\
                      fetch(new URL(\"./chunk_3.wasm\", import.meta.url));\n\
                      fetch(new URL(\"./split___x_view_1.wasm\", import.meta.url));\n";
        let mut files = vec![
            ("pkg/opsdeck.js".to_string(), Bytes::from_static(b"js")),
            ("pkg/opsdeck.wasm".to_string(), Bytes::from_static(b"wasm")),
            ("pkg/opsdeck.css".to_string(), Bytes::from_static(b"css")),
            (
                "pkg/chunk_3.wasm".to_string(),
                Bytes::from_static(b"part 3"),
            ),
            (
                "pkg/split___x_view_1.wasm".to_string(),
                Bytes::from_static(b"part x"),
            ),
            (SPLIT_LOADER.to_string(), Bytes::from(loader)),
        ];
        link_split_loader(&mut files);
        let site = Site::from_files(
            files
                .iter()
                .map(|(path, body)| SiteFile {
                    path: path.clone(),
                    identity: body.clone(),
                    gzip: None,
                    br: None,
                })
                .collect(),
        );
        let urls = site.urls();
        let linked = std::str::from_utf8(&files[5].1).unwrap();
        let main_js = urls["/pkg/opsdeck.js"].strip_prefix("/pkg/").unwrap();
        assert!(
            linked.contains(&format!("from \"./{main_js}\"")),
            "{linked}"
        );
        for part in ["chunk_3", "split___x_view_1"] {
            let hashed = urls[&format!("/pkg/{part}.wasm")]
                .strip_prefix("/pkg/")
                .unwrap()
                .to_string();
            assert_ne!(hashed, format!("{part}.wasm"));
            assert!(
                linked.contains(&format!("new URL(\"./{hashed}\"")),
                "{linked}"
            );
        }
        assert!(!linked.contains("opsdeck.js\""));

        // Without the trio there is no hashed name to point at: unchanged.
        let mut alone = vec![(SPLIT_LOADER.to_string(), Bytes::from(loader))];
        link_split_loader(&mut alone);
        assert_eq!(&alone[0].1[..], loader.as_bytes());
    }

    #[test]
    fn revalidation_matches_the_etag_in_any_form() {
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"ab12\""));
        assert!(if_none_match(&h, "ab12"));
        assert!(!if_none_match(&h, "cd34"));
    }
}
