//! Credentials as docker keeps them (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`:
//! `auths`, `credsStore`, `credHelpers`) and the `WWW-Authenticate` challenges registries send.
//!
//! The `docker_credential` crate only reads, and only from `~/.docker`; `login`/`logout` must
//! also write (atomically, keeping every key we do not know) and tests point `DOCKER_CONFIG`
//! elsewhere, so the few lines of the format live here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::reference::{normalize_server, DOCKER_HUB};
use crate::Error;

/// A user's credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Basic credentials (also used to obtain bearer tokens).
    UserPassword {
        /// User name.
        username: String,
        /// Password or personal access token.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json).
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    // Never print secrets, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::UserPassword { username, .. } => {
                write!(f, "UserPassword({username:?}, ***)")
            }
            Credential::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

/// The docker configuration file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

/// The key docker uses in `auths` for a registry (docker hub keeps its historical URL).
pub fn config_key(registry: &str) -> String {
    let r = normalize_server(registry);
    if r == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        r
    }
}

fn read_config(path: &Path) -> Result<Map<String, Value>, Error> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Error::Credentials(format!(
                "{}: not a JSON object",
                path.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_config(path: &Path, cfg: &Map<String, Value>) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let mut bytes =
        serde_json::to_vec_pretty(cfg).map_err(|e| Error::Credentials(e.to_string()))?;
    bytes.push(b'\n');
    tmp.write_all(&bytes).map_err(io)?;
    // config.json holds secrets: never readable by others, whatever the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// The credential helper configured for `registry`, if any (`credHelpers` wins over `credsStore`).
fn helper_for(cfg: &Map<String, Value>, registry: &str) -> Option<String> {
    let key = config_key(registry);
    if let Some(Value::Object(h)) = cfg.get("credHelpers") {
        for (k, v) in h {
            if config_key(k) == key {
                return v.as_str().map(str::to_string);
            }
        }
    }
    cfg.get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Credentials(format!("cannot run {prog}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits early closes its stdin; its exit status tells the real story.
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Credentials(format!("{prog} {verb}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string()
            + String::from_utf8_lossy(&out.stderr).trim();
        return Err(Error::Credentials(format!("{prog} {verb}: {msg}")));
    }
    Ok(out.stdout)
}

/// Looks up the credentials for `registry` in the docker configuration at `path`.
/// Returns `None` when the user has not logged in (anonymous access).
pub fn lookup(path: &Path, registry: &str) -> Result<Option<Credential>, Error> {
    let cfg = read_config(path)?;
    let key = config_key(registry);
    if let Some(helper) = helper_for(&cfg, registry) {
        let out = match run_helper(&helper, "get", key.as_bytes()) {
            Ok(o) => o,
            // Helpers answer "credentials not found in native keychain" with a failure.
            Err(Error::Credentials(m)) if m.contains("not found") => return Ok(None),
            Err(e) => return Err(e),
        };
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| Error::Credentials(format!("docker-credential-{helper}: {e}")))?;
        let user = v["Username"].as_str().unwrap_or_default().to_string();
        let secret = v["Secret"].as_str().unwrap_or_default().to_string();
        return Ok(Some(if user == "<token>" {
            Credential::IdentityToken(secret)
        } else {
            Credential::UserPassword {
                username: user,
                password: secret,
            }
        }));
    }
    let Some(Value::Object(auths)) = cfg.get("auths") else {
        return Ok(None);
    };
    for (k, entry) in auths {
        if config_key(k) != key {
            continue;
        }
        if let Some(t) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(t.to_string())));
        }
        if let Some(a) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|e| {
                    Error::Credentials(format!("{}: auth for {k}: {e}", path.display()))
                })?;
            let s = String::from_utf8(raw)
                .map_err(|_| Error::Credentials(format!("auth for {k} is not UTF-8")))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| Error::Credentials(format!("auth for {k} has no ':'")))?;
            return Ok(Some(Credential::UserPassword {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    Ok(None)
}

/// Saves credentials for `registry`: through the configured helper if there is one, else as
/// base64 `auth` in `auths` (as docker does). The file is replaced atomically.
pub fn store(path: &Path, registry: &str, username: &str, password: &str) -> Result<(), Error> {
    let mut cfg = read_config(path)?;
    let key = config_key(registry);
    if let Some(helper) = helper_for(&cfg, registry) {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
        run_helper(&helper, "store", input.to_string().as_bytes())?;
        // Docker leaves an empty entry so that `docker info`-like tools list the registry.
        auths_mut(&mut cfg).insert(key, Value::Object(Map::new()));
    } else {
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        auths_mut(&mut cfg).insert(key, serde_json::json!({ "auth": auth }));
    }
    write_config(path, &cfg)
}

/// Removes the credentials for `registry`. Returns false if there were none.
pub fn erase(path: &Path, registry: &str) -> Result<bool, Error> {
    let mut cfg = read_config(path)?;
    let key = config_key(registry);
    let mut found = false;
    if let Some(helper) = helper_for(&cfg, registry) {
        found |= run_helper(&helper, "erase", key.as_bytes()).is_ok();
    }
    let auths = auths_mut(&mut cfg);
    let keys: Vec<String> = auths
        .keys()
        .filter(|k| config_key(k) == key)
        .cloned()
        .collect();
    for k in keys {
        auths.remove(&k);
        found = true;
    }
    if found {
        write_config(path, &cfg)?;
    }
    Ok(found)
}

fn auths_mut(cfg: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let v = cfg
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        // Made an object just above.
        _ => unreachable!(),
    }
}

/// Reads one line from standard input with the terminal's echo turned off (when it is a
/// terminal), for `login`'s password prompt. The prompt goes to standard error.
pub fn read_secret_line(prompt: &str) -> std::io::Result<String> {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let saved = rustix::termios::tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        eprint!("{prompt}");
        let mut quiet = t.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)?;
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        // Restore echo even if reading failed; the newline the user typed was not echoed.
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, t);
        eprintln!();
    }
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lowercased.
    pub scheme: String,
    /// The parameters (`realm`, `service`, `scope`, `error`), keys lowercased.
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth",service="registry",scope="repository:a:pull"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(k, v);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/a:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/a:pull,push");
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
    }

    #[test]
    fn store_lookup_erase_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/config.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, r#"{"auths":{},"psFormat":"x"}"#).unwrap();
        assert_eq!(lookup(&p, "127.0.0.1:5000").unwrap(), None);
        store(&p, "127.0.0.1:5000", "u", "p:w").unwrap();
        store(&p, "docker.io", "hub", "pw").unwrap();
        let raw: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(raw["psFormat"], "x", "unknown keys are kept");
        assert_eq!(raw["auths"]["127.0.0.1:5000"]["auth"], "dTpwOnc=");
        assert!(raw["auths"]["https://index.docker.io/v1/"].is_object());
        let want = Credential::UserPassword {
            username: "u".into(),
            password: "p:w".into(),
        };
        assert_eq!(lookup(&p, "http://127.0.0.1:5000/").unwrap(), Some(want));
        assert!(erase(&p, "127.0.0.1:5000").unwrap());
        assert!(!erase(&p, "127.0.0.1:5000").unwrap());
        assert_eq!(lookup(&p, "127.0.0.1:5000").unwrap(), None);
        assert!(lookup(&p, "index.docker.io").unwrap().is_some());
    }
}
