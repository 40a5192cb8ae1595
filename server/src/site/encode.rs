//! Compression of the site's files, once (when the release is packed, or
//! when a development site directory is read), and the choice of encoding
//! for a request.
//!
//! brotli (the `brotli` crate, Dropbox's pure-Rust port of Google's
//! encoder) and gzip (`flate2`, already in the build through tower-http):
//! every browser accepts one of them over https, brotli is about a fifth
//! smaller on the wasm.

use std::io::Write;

use axum::http::HeaderValue;
use bytes::Bytes;

use super::{Asset, SiteFile};

/// How hard to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// Release packing: brotli quality 11, gzip level 9 (seconds, once).
    Best,
    /// A development site read at every start: brotli 5, gzip 6.
    Fast,
}

/// Types worth compressing; images other than SVG and fonts already are.
fn compressible(path: &str) -> bool {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    matches!(
        ext,
        "js" | "mjs" | "wasm" | "css" | "svg" | "ico" | "json" | "map" | "txt" | "html" | "xml"
    )
}

/// `identity` with its gzip and brotli forms, each kept only if smaller.
pub fn compress(path: String, identity: Bytes, effort: Effort) -> SiteFile {
    let (gzip, br) = if compressible(&path) && identity.len() > 256 {
        let gzip = gzip(&identity, effort).filter(|g| g.len() < identity.len());
        let br = brotli(&identity, effort).filter(|b| b.len() < identity.len());
        (gzip.map(Bytes::from), br.map(Bytes::from))
    } else {
        (None, None)
    };
    SiteFile {
        path,
        identity,
        gzip,
        br,
    }
}

fn gzip(data: &[u8], effort: Effort) -> Option<Vec<u8>> {
    let level = match effort {
        Effort::Best => flate2::Compression::best(),
        Effort::Fast => flate2::Compression::default(),
    };
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
    enc.write_all(data).ok()?;
    enc.finish().ok()
}

fn brotli(data: &[u8], effort: Effort) -> Option<Vec<u8>> {
    let quality = match effort {
        Effort::Best => 11,
        Effort::Fast => 5,
    };
    let mut out = Vec::new();
    {
        // 4 KiB buffer, window 2^22 (brotli's default).
        let mut enc = ::brotli::CompressorWriter::new(&mut out, 4096, quality, 22);
        enc.write_all(data).ok()?;
        enc.flush().ok()?;
    }
    Some(out)
}

/// The encoding a response gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Br,
    Gzip,
    Identity,
}

/// The encoding of `asset` the request accepts with the highest weight
/// (brotli before gzip before identity at equal weight). `identity` is
/// always possible: it is what a client that refuses it would get as a
/// 406 anyway, and nothing sends that.
pub fn choose(accept: Option<&HeaderValue>, asset: &Asset) -> Choice {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Choice::Identity;
    };
    let weight = |name: &str| -> f32 {
        let mut star = None;
        for part in accept.split(',') {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or_default().trim();
            let q = it
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .map(|q| q.trim().parse().unwrap_or(0.0))
                })
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case(name)
                || (name == "gzip" && coding.eq_ignore_ascii_case("x-gzip"))
            {
                return q;
            }
            if coding == "*" {
                star = Some(q);
            }
        }
        star.unwrap_or(0.0)
    };
    let br = if asset.br.is_some() {
        weight("br")
    } else {
        0.0
    };
    let gz = if asset.gzip.is_some() {
        weight("gzip")
    } else {
        0.0
    };
    if br > 0.0 && br >= gz {
        Choice::Br
    } else if gz > 0.0 {
        Choice::Gzip
    } else {
        Choice::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset() -> Asset {
        let f = compress(
            "a.js".into(),
            Bytes::from("let x = 1;\n".repeat(100)),
            Effort::Fast,
        );
        Asset::new(&f.path, f.identity, f.gzip, f.br)
    }

    fn pick(accept: &str) -> Choice {
        choose(Some(&HeaderValue::from_str(accept).unwrap()), &asset())
    }

    #[test]
    fn the_best_accepted_encoding_wins() {
        assert_eq!(pick("gzip, deflate, br, zstd"), Choice::Br);
        assert_eq!(pick("gzip, deflate"), Choice::Gzip);
        assert_eq!(pick("gzip;q=1.0, br;q=0.5"), Choice::Gzip);
        assert_eq!(pick("br;q=0, gzip"), Choice::Gzip);
        assert_eq!(pick("*"), Choice::Br);
        assert_eq!(pick("*;q=0"), Choice::Identity);
        assert_eq!(pick("identity"), Choice::Identity);
        assert_eq!(choose(None, &asset()), Choice::Identity);
    }

    #[test]
    fn a_file_that_does_not_shrink_is_kept_only_as_it_is() {
        let f = compress("a.png".into(), Bytes::from(vec![7u8; 4096]), Effort::Best);
        assert!(f.gzip.is_none() && f.br.is_none());
        let f = compress("a.css".into(), Bytes::from(vec![7u8; 4096]), Effort::Best);
        assert!(f.gzip.unwrap().len() < 4096 && f.br.unwrap().len() < 4096);
    }
}
