//! Secret detection in file names and contents: private keys, cloud and forge tokens, and
//! `password = "…"` assignments whose value looks random (Shannon entropy).

/// How much of a file is read for content rules; secrets live in small files.
pub const MAX_SCAN_BYTES: usize = 1 << 20;

/// One secret found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHit {
    /// What it is (`private key`, `AWS access key ID`, …).
    pub kind: String,
    /// 1-based line in the file (0 for a name match).
    pub line: usize,
    /// A redacted excerpt: the first 4 characters of the value, then `…`.
    pub excerpt: String,
}

/// File names that are secrets whatever they contain.
pub fn secret_file_name(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name {
        "id_rsa" | "id_dsa" | "id_ecdsa" | "id_ed25519" | "id_ecdsa_sk" | "id_ed25519_sk" => {
            Some("SSH private key file")
        }
        ".git-credentials" => Some("git credentials file"),
        ".netrc" | "_netrc" => Some("netrc credentials file"),
        ".pgpass" => Some("PostgreSQL password file"),
        "credentials" if path.ends_with("/.aws/credentials") => Some("AWS credentials file"),
        "config.json" if path.ends_with("/.docker/config.json") => None,
        _ => None,
    }
}

/// Bits of entropy per character of `s` (Shannon).
pub fn shannon_entropy(s: &str) -> f64 {
    let n = s.chars().count();
    if n == 0 {
        return 0.0;
    }
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

fn redact(v: &str) -> String {
    let head: String = v.chars().take(4).collect();
    format!("{head}…")
}

/// Whether `password = "…"` lines of this file are settings rather than code. Code and the
/// packages a build installs (site-packages, node_modules) are full of `token = …` that are not
/// secrets; configuration files are where a real one is written.
pub fn config_like(path: &str) -> bool {
    const PACKAGE_DIRS: [&str; 6] = [
        "/site-packages/",
        "/dist-packages/",
        "/node_modules/",
        "/usr/share/",
        "/pkg/mod/",
        "/.cargo/registry/",
    ];
    if PACKAGE_DIRS.iter().any(|d| path.contains(d)) {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.starts_with(".env") || name == "credentials" || name == "config" {
        return true;
    }
    match name.rsplit_once('.') {
        None => true,
        Some(("", _)) => true,
        Some((_, ext)) => matches!(
            ext,
            "env"
                | "ini"
                | "cfg"
                | "conf"
                | "config"
                | "properties"
                | "yaml"
                | "yml"
                | "json"
                | "toml"
                | "xml"
                | "npmrc"
                | "pypirc"
                | "netrc"
                | "sh"
                | "bash"
                | "txt"
                | "secret"
        ),
    }
}

/// Finds secrets in `content`, the file at `path` (text; a file with NUL bytes in its first 8 KiB
/// is skipped, except for private-key armour, which is searched everywhere). Token shapes are
/// searched in every text file, `password = "…"` assignments only in [`config_like`] files.
pub fn scan_content(path: &str, content: &[u8]) -> Vec<SecretHit> {
    let mut hits = Vec::new();
    let text = String::from_utf8_lossy(content);
    let binary = content[..content.len().min(8192)].contains(&0);
    let settings = config_like(path);
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        if let Some(p) = line.find("-----BEGIN ") {
            let rest = &line[p + 11..];
            if let Some(end) = rest.find("-----") {
                let label = &rest[..end];
                if label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK") {
                    hits.push(SecretHit {
                        kind: format!("{label} (PEM)"),
                        line: ln,
                        excerpt: format!("-----BEGIN {label}-----"),
                    });
                }
            }
        }
        if binary {
            continue;
        }
        token_hits(line, ln, &mut hits);
        if settings {
            assignment_hit(line, ln, &mut hits);
        }
    }
    hits
}

/// Tokens whose shape alone gives them away.
fn token_hits(line: &str, ln: usize, hits: &mut Vec<SecretHit>) {
    let words = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    for w in words {
        let kind = if (w.starts_with("AKIA") || w.starts_with("ASIA"))
            && w.len() == 20
            && w[4..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            Some("AWS access key ID")
        } else if ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]
            .iter()
            .any(|p| w.starts_with(p))
            && w.len() >= 40
        {
            Some("GitHub token")
        } else if w.starts_with("github_pat_") && w.len() >= 60 {
            Some("GitHub fine-grained token")
        } else if w.starts_with("glpat-") && w.len() >= 26 {
            Some("GitLab token")
        } else if w.starts_with("xox") && w.len() >= 20 && w.as_bytes().get(4) == Some(&b'-') {
            Some("Slack token")
        } else if w.starts_with("AIza") && w.len() == 39 {
            Some("Google API key")
        } else if w.starts_with("npm_") && w.len() == 40 {
            Some("npm token")
        } else {
            None
        };
        if let Some(kind) = kind {
            hits.push(SecretHit {
                kind: kind.into(),
                line: ln,
                excerpt: redact(w),
            });
        }
    }
}

/// Keys that name a secret when they are assigned.
const SECRET_KEYS: [&str; 9] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "authtoken",
];

/// `KEY = value`, `KEY: value`, `"key": "value"` with a secret-naming key and a value that looks
/// generated: at least 8 characters, no spaces, letters and digits, and ≥ 3 bits of entropy per
/// character (a word or a placeholder such as `changeme` stays below).
fn assignment_hit(line: &str, ln: usize, hits: &mut Vec<SecretHit>) {
    let lower = line.to_ascii_lowercase();
    let Some(key) = SECRET_KEYS.iter().find(|k| lower.contains(*k)) else {
        return;
    };
    let Some(kpos) = lower.find(key) else {
        return;
    };
    let after = &line[kpos + key.len()..];
    // The rest of the key name (`_ACCESS_KEY`, `"`), then the separator.
    let after = after.trim_start_matches(|c: char| {
        c.is_ascii_alphanumeric() || c == '_' || c == '"' || c == '\''
    });
    let after = after.trim_start();
    let Some(value) = after.strip_prefix(['=', ':']) else {
        return;
    };
    let value = value.trim().trim_end_matches([',', ';']);
    let quoted = value.starts_with(['"', '\'']);
    let value = value.trim_matches(['"', '\'']);
    // Code that computes the value (`token = getToken()`, `${TOKEN}`) is not a secret.
    if value.len() < 8
        || value.contains(char::is_whitespace)
        || value.contains(['(', ')', '{', '}', '<', '>'])
        || value.starts_with('$')
        || (!quoted
            && value.contains('.')
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'))
    {
        return;
    }
    // Generated secrets mix letters and digits; identifiers and words do not.
    let mixed =
        value.chars().any(|c| c.is_ascii_digit()) && value.chars().any(|c| c.is_ascii_alphabetic());
    if mixed && shannon_entropy(value) >= 3.0 {
        hits.push(SecretHit {
            kind: format!("hard-coded {key}"),
            line: ln,
            excerpt: redact(value),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_tokens_and_passwords_are_found() {
        let key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        let h = scan_content("/k", key);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].kind, "OPENSSH PRIVATE KEY (PEM)");
        let aws = b"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
        let kinds: Vec<String> = scan_content("/root/.aws/credentials", aws)
            .into_iter()
            .map(|h| h.kind)
            .collect();
        assert!(
            kinds.contains(&"AWS access key ID".to_string()),
            "{kinds:?}"
        );
        assert!(kinds.iter().any(|k| k.contains("access_key")), "{kinds:?}");
        let gh = b"export GH=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789ab\n";
        assert_eq!(scan_content("/app/main.go", gh)[0].kind, "GitHub token");
        let pw = b"DB_PASSWORD=\"x9$Lq2!vR7#pZ\"\n";
        assert_eq!(scan_content("/app/.env", pw).len(), 1);
        // The same line in code is code.
        assert!(scan_content("/app/settings.py", pw).is_empty());
        assert!(scan_content("/venv/lib/site-packages/x/config.json", pw).is_empty());
    }

    #[test]
    fn code_placeholders_and_public_keys_are_not_secrets() {
        let code = b"const token = getToken(req);\npassword = changeme\nsecret: ${SECRET}\npassword_hint = 'see the wiki'\n";
        assert!(
            scan_content("/app/app.conf", code).is_empty(),
            "{:?}",
            scan_content("/app/app.conf", code)
        );
        let identifiers = b"token: upcaseTokens\npassword = self.password_field\n";
        assert!(scan_content("/app/c.yaml", identifiers).is_empty());
        let pubkey = b"-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----\n";
        assert!(scan_content("/k.pem", pubkey).is_empty());
        assert!(shannon_entropy("aaaaaaaa") < 1.0);
        assert!(shannon_entropy("x9Lq2vR7pZ") > 3.0);
    }

    #[test]
    fn key_file_names_are_secrets() {
        assert!(secret_file_name("/root/.ssh/id_rsa").is_some());
        assert!(secret_file_name("/root/.ssh/id_rsa.pub").is_none());
        assert!(secret_file_name("/home/a/.aws/credentials").is_some());
        assert!(secret_file_name("/etc/credentials").is_none());
    }
}
