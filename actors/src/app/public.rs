//! `public/`: an app's static files, served at `/<app>/<path>` when no route
//! matches a GET or HEAD.
//!
//! The CLI sends every file under `public/` as bytes (base64 in the bundle's
//! `public` map, so a PNG survives the JSON trip); everything else in a bundle
//! stays UTF-8 text. Each file gets a strong ETag (a hash of its bytes) and
//! [`PUBLIC_CACHE_CONTROL`], so a browser revalidates and is answered 304
//! without the body while the file is unchanged.

use std::collections::BTreeMap;

use base64::Engine;
use picloud_lua_sdk::Response;
use sha2::{Digest, Sha256};

/// The folder of an app whose files are served as static assets.
pub const PUBLIC_FOLDER: &str = "public";

/// The largest one static file may be, in bytes (decoded). A deploy body is
/// bounded by `deploy_bytes_max` as well, and base64 adds a third.
pub const PUBLIC_FILE_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The most bytes (decoded) all static files of one app version may hold.
pub const PUBLIC_BYTES_MAX: usize = 4 * 1024 * 1024;

/// `Cache-Control` of every static file. Names are not fingerprinted and a
/// redeploy replaces files in place, so caches keep a copy but revalidate it
/// each time (a cheap 304 while the ETag matches): a deploy is seen at once.
pub const PUBLIC_CACHE_CONTROL: &str = "public, no-cache";

/// One static file, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicFile {
    pub bytes: Vec<u8>,
    /// Strong ETag, quoted: `"<first 16 bytes of SHA-256, hex>"`.
    pub etag: String,
    pub content_type: &'static str,
}

/// The static files of one app version, by path below `public/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicFiles {
    files: BTreeMap<String, PublicFile>,
}

impl PublicFiles {
    /// Decodes and checks a bundle's `public` map (path → base64): paths
    /// relative, each file and the total within the limits.
    pub fn decode(encoded: &BTreeMap<String, String>) -> Result<PublicFiles, String> {
        let mut files = BTreeMap::new();
        let mut total = 0usize;
        for (path, text) in encoded {
            if path.starts_with('/') || path.split('/').any(|part| part == ".." || part.is_empty())
            {
                return Err(format!(
                    "{PUBLIC_FOLDER}/{path}: file paths must be relative"
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("{PUBLIC_FOLDER}/{path}: not valid base64: {e}"))?;
            if bytes.len() > PUBLIC_FILE_BYTES_MAX {
                return Err(format!(
                    "{PUBLIC_FOLDER}/{path}: {} bytes; a static file may hold at most \
                     {PUBLIC_FILE_BYTES_MAX}",
                    bytes.len()
                ));
            }
            total += bytes.len();
            if total > PUBLIC_BYTES_MAX {
                return Err(format!(
                    "{PUBLIC_FOLDER}/: more than {PUBLIC_BYTES_MAX} bytes of static files"
                ));
            }
            let digest = Sha256::digest(&bytes);
            let etag = format!(
                "\"{}\"",
                digest[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            files.insert(
                path.clone(),
                PublicFile {
                    bytes,
                    etag,
                    content_type: content_type(path),
                },
            );
        }
        Ok(PublicFiles { files })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file a request path (below `/<app>`, already percent-decoded)
    /// names: `/a/b.css` → `a/b.css`; a path ending in `/` names its
    /// `index.html`.
    pub fn find(&self, path: &str) -> Option<&PublicFile> {
        let relative = path.trim_start_matches('/');
        if relative.is_empty() || relative.ends_with('/') {
            return self.files.get(&format!("{relative}index.html"));
        }
        self.files.get(relative)
    }

    /// The response for a GET or HEAD of `path`, or `None` when no file
    /// matches. `if_none_match` is the request's header: a matching ETag
    /// (or `*`) is answered 304 with no body.
    pub fn serve(&self, path: &str, if_none_match: Option<&str>) -> Option<Response> {
        let file = self.find(path)?;
        let mut headers = vec![
            (
                "cache-control".to_string(),
                PUBLIC_CACHE_CONTROL.to_string(),
            ),
            ("etag".to_string(), file.etag.clone()),
        ];
        if if_none_match.is_some_and(|header| etag_matches(header, &file.etag)) {
            return Some(Response {
                status: 304,
                headers,
                body: Vec::new(),
            });
        }
        headers.push(("content-type".to_string(), file.content_type.to_string()));
        Some(Response {
            status: 200,
            headers,
            body: file.bytes.clone(),
        })
    }
}

/// `If-None-Match` uses the weak comparison (RFC 9110 13.1.2): `W/` is
/// ignored on either side.
pub fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.trim_start_matches("W/") == etag.trim_start_matches("W/")
    })
}

/// The content type of a file by its extension; unknown ones are served as
/// bytes (`application/octet-stream`), which browsers download rather than
/// render.
pub fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "webmanifest" => "application/manifest+json",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(path, bytes)| {
                (
                    path.to_string(),
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                )
            })
            .collect()
    }

    #[test]
    fn serves_bytes_with_type_etag_and_revalidation() {
        let public = PublicFiles::decode(&files(&[
            ("logo.png", &[0x89, b'P', 0xff]),
            ("index.html", b"hi"),
        ]))
        .expect("valid");
        let response = public.serve("/logo.png", None).expect("found");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, [0x89, b'P', 0xff]);
        let etag = public.find("/logo.png").expect("found").etag.clone();
        assert!(
            response
                .headers
                .contains(&("content-type".into(), "image/png".into()))
        );
        let not_modified = public
            .serve("/logo.png", Some(&format!("\"x\", W/{etag}")))
            .expect("found");
        assert_eq!((not_modified.status, not_modified.body.len()), (304, 0));
        assert_eq!(public.serve("/", None).expect("index").body, b"hi");
        assert!(public.serve("/nope.png", None).is_none());
    }

    #[test]
    fn limits_and_paths_are_checked() {
        let big = vec![0u8; PUBLIC_FILE_BYTES_MAX + 1];
        let error = PublicFiles::decode(&files(&[("big.bin", &big)])).expect_err("too big");
        assert!(error.contains("public/big.bin"), "{error}");
        let half = vec![0u8; PUBLIC_FILE_BYTES_MAX];
        let many: Vec<(String, &[u8])> = (0..3)
            .map(|n| (format!("{n}.bin"), half.as_slice()))
            .collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let error = PublicFiles::decode(&files(&many)).expect_err("total");
        assert!(error.contains("bytes of static files"), "{error}");
        let error = PublicFiles::decode(&files(&[("../x", b"")])).expect_err("relative");
        assert!(error.contains("relative"), "{error}");
    }
}
