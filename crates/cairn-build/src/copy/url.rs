//! `ADD <http(s) url>`: the file is fetched (BuildKit's http source rules: named after the URL
//! path's last component, mode 0600, mtime from `Last-Modified`), never unpacked, and checked
//! against `--checksum` when given.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::error::{CopyError, Result};

/// Name of a downloaded file in a destination directory (dockerfile2llb's rule).
pub fn file_name(url: &str) -> String {
    let path = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
    // Go's path.Base: trailing slashes do not count.
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(b) if !b.is_empty() && b != "." => b.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// An expected digest from `--checksum=<algo>:<hex>`.
#[derive(Debug, Clone)]
pub struct Checksum {
    algo: String,
    hex: String,
}

impl Checksum {
    /// Parses `sha256:…` (also `sha384`, `sha512`).
    pub fn parse(s: &str) -> Result<Checksum> {
        let bad = || CopyError::Invalid {
            cmd: "ADD",
            message: format!("invalid --checksum {s:?}: expected sha256:<64 hex digits>"),
        };
        let (algo, hex) = s.split_once(':').ok_or_else(bad)?;
        let len = match algo {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checksum {
            algo: algo.to_string(),
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// `algo:hex`.
    pub fn as_string(&self) -> String {
        format!("{}:{}", self.algo, self.hex)
    }
}

/// A reader that hashes what passes through it.
pub struct Hashing<R> {
    inner: R,
    s256: Sha256,
    s384: Option<Sha384>,
    s512: Option<Sha512>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.s256.update(&buf[..n]);
        if let Some(h) = &mut self.s384 {
            h.update(&buf[..n]);
        }
        if let Some(h) = &mut self.s512 {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R> Hashing<R> {
    /// Hashes with sha256, plus the algorithm of `want` if it is another one.
    pub fn new(inner: R, want: Option<&Checksum>) -> Self {
        let algo = want.map(|c| c.algo.as_str());
        Hashing {
            inner,
            s256: Sha256::new(),
            s384: (algo == Some("sha384")).then(Sha384::new),
            s512: (algo == Some("sha512")).then(Sha512::new),
        }
    }

    /// (`sha256:<hex>` of everything read, the digest in `want`'s algorithm).
    pub fn finish(self) -> (String, String) {
        let s256 = format!("sha256:{}", hex::encode(self.s256.finalize()));
        let other = match (self.s384, self.s512) {
            (Some(h), _) => format!("sha384:{}", hex::encode(h.finalize())),
            (_, Some(h)) => format!("sha512:{}", hex::encode(h.finalize())),
            _ => s256.clone(),
        };
        (s256, other)
    }
}

/// A started download: the body to read, and `Last-Modified` as seconds since the epoch.
pub struct Fetch {
    /// The response body.
    pub body: Box<dyn Read>,
    /// From `Last-Modified`, if the server sent a valid one.
    pub mtime: Option<i64>,
}

/// Starts fetching `url`; a non-2xx status is an error.
pub fn fetch(url: &str) -> Result<Fetch> {
    let err = |message: String| CopyError::Fetch {
        url: url.to_string(),
        message,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        // The blocking client applies this to each wait (headers, every read), not to the whole
        // download: a large file may take long, a stalled connection fails.
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let resp = client.get(url).send().map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("unexpected status {}", resp.status())));
    }
    let mtime = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    Ok(Fetch {
        body: Box::new(resp),
        mtime,
    })
}

/// A download kept for the rest of the process: the digest of a step fetches the URL, and the
/// copy that follows (cache miss) reads the same bytes instead of fetching again. The file is
/// anonymous (unlinked at creation), so nothing is left behind whatever happens.
struct Kept {
    file: File,
    sha256: String,
    mtime: Option<i64>,
}

fn kept() -> &'static Mutex<HashMap<String, Kept>> {
    static KEPT: OnceLock<Mutex<HashMap<String, Kept>>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
}

/// Reads a kept download from its start without sharing a file offset with other readers.
struct KeptReader {
    file: File,
    pos: u64,
}

impl Read for KeptReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The `sha256:<hex>` of the content at `url`, fetched once per process.
pub fn content_digest(url: &str) -> Result<String> {
    if let Some(k) = kept().lock().unwrap_or_else(|e| e.into_inner()).get(url) {
        return Ok(k.sha256.clone());
    }
    let err = |e: io::Error| CopyError::Fetch {
        url: url.to_string(),
        message: e.to_string(),
    };
    let fetch = fetch(url)?;
    let mut file = tempfile::tempfile().map_err(err)?;
    let mut r = Hashing::new(fetch.body, None);
    io::copy(&mut r, &mut file).map_err(err)?;
    let sha256 = r.finish().0;
    kept().lock().unwrap_or_else(|e| e.into_inner()).insert(
        url.to_string(),
        Kept {
            file,
            sha256: sha256.clone(),
            mtime: fetch.mtime,
        },
    );
    Ok(sha256)
}

/// The content at `url`: the kept download if [`content_digest`] fetched it, else a new fetch.
pub fn open(url: &str) -> Result<Fetch> {
    if let Some(k) = kept().lock().unwrap_or_else(|e| e.into_inner()).get(url) {
        if let Ok(file) = k.file.try_clone() {
            return Ok(Fetch {
                body: Box::new(KeptReader { file, pos: 0 }),
                mtime: k.mtime,
            });
        }
    }
    fetch(url)
}

/// Checks a finished hash against `--checksum`.
pub fn verify(url: &str, want: &Checksum, got: &str) -> Result<()> {
    if want.as_string() != got {
        return Err(CopyError::Checksum {
            url: url.to_string(),
            expected: want.as_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_dockerfile2llb() {
        assert_eq!(
            file_name("https://example.com/a/b/tool.tar.gz?x=1"),
            "tool.tar.gz"
        );
        assert_eq!(file_name("http://127.0.0.1:8080/file"), "file");
        assert_eq!(file_name("http://example.com/"), "__unnamed__");
        assert_eq!(file_name("http://example.com"), "__unnamed__");
        assert_eq!(file_name("http://example.com/dir/"), "dir");
    }

    #[test]
    fn checksum_syntax() {
        assert!(Checksum::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(Checksum::parse("sha256:abc").is_err());
        assert!(Checksum::parse(&format!("md5:{}", "a".repeat(32))).is_err());
    }
}
