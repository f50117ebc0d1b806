//! Image references normalised as docker does: `alpine` → `docker.io/library/alpine:latest`,
//! `localhost:5000/x` keeps its registry, `name@sha256:…` keeps its digest.

use crate::Error;

/// The default registry of short names.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// Registry host (and port): `docker.io`, `localhost:5000`, `ghcr.io`.
    pub domain: String,
    /// Repository path inside the registry: `library/alpine`.
    pub path: String,
    /// The tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub tag: Option<String>,
    /// The digest, if any (`sha256:…`).
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let bad = |why: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: why.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(bad("invalid digest"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() || name.len() > 255 {
            return Err(bad("invalid repository name"));
        }
        for comp in path.split('/') {
            let ok = !comp.is_empty()
                && comp
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && comp
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                && comp
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(bad(if comp.bytes().any(|b| b.is_ascii_uppercase()) {
                    "repository name must be lowercase"
                } else {
                    "invalid repository name"
                }));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `docker.io/library/alpine`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as docker shows it: `alpine`, `user/app`, `localhost:5000/x`.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.repository()
        }
    }

    /// The whole reference as docker shows it: `alpine:latest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_repository();
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = self.repository();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

/// `alpine` → `docker.io/library/alpine:latest`.
pub fn normalize(s: &str) -> Result<String, Error> {
    Ok(Reference::parse(s)?.to_string())
}

/// `docker.io/library/alpine:latest` → `alpine:latest` (a string that does not parse is returned
/// as it is).
pub fn familiar(s: &str) -> String {
    Reference::parse(s)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        for (i, o) in [
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/alpine", "docker.io/library/alpine:latest"),
            ("index.docker.io/library/alpine:1", "docker.io/library/alpine:1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x:t", "localhost/x:t"),
            ("ghcr.io/a/b/c:v1.2", "ghcr.io/a/b/c:v1.2"),
            (
                "alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "docker.io/library/alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ] {
            assert_eq!(normalize(i).unwrap(), o, "{i}");
        }
        assert_eq!(familiar("docker.io/library/alpine:latest"), "alpine:latest");
        assert_eq!(familiar("docker.io/user/app:1"), "user/app:1");
        assert_eq!(
            familiar("localhost:5000/x:latest"),
            "localhost:5000/x:latest"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Alpine",
            "a:b:c",
            "a@sha256:12",
            "a:-x",
            "/a",
            "a//b",
            "a:",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
