//! Typed flag and argument values, checked after expansion: `--chmod`, `--checksum`,
//! `RUN --mount=…`, tmpfs sizes, EXPOSE ports, STOPSIGNAL.

use crate::{CacheSharing, Chmod, Mount, Source};

/// `--chmod=0755` or `--chmod=u+x,g-w`.
pub(crate) fn parse_chmod(v: &str) -> Result<Chmod, String> {
    let bad = || {
        format!("invalid chmod parameter: {v:?} (expected octal such as 0755 or symbolic such as u+x,g-w)")
    };
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let n = u32::from_str_radix(v, 8).map_err(|_| bad())?;
        return if n <= 0o7777 {
            Ok(Chmod::Octal(n))
        } else {
            Err(bad())
        };
    }
    for clause in v.split(',') {
        let who_len = clause.bytes().take_while(|b| b"ugoa".contains(b)).count();
        let mut rest = &clause[who_len..];
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let Some(r) = rest.strip_prefix(['+', '-', '=']) else {
                return Err(bad());
            };
            let n = r.bytes().take_while(|b| b"rwxXst".contains(b)).count();
            let copy = if n == 0 {
                r.bytes().take_while(|b| b"ugo".contains(b)).count().min(1)
            } else {
                0
            };
            rest = &r[n + copy..];
        }
    }
    Ok(Chmod::Symbolic(v.to_string()))
}

/// `--checksum=sha256:<hex>` (also sha384/sha512), or a git commit hash for a git source.
pub(crate) fn check_checksum(v: &str) -> Result<(), String> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match v.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha384", h)) => hex(h, 96),
        Some(("sha512", h)) => hex(h, 128),
        Some(_) => false,
        None => hex(v, 40) || hex(v, 64),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid checksum {v:?} (expected sha256:<64 hex digits>, or a git commit hash)"
        ))
    }
}

/// An http(s) URL source of ADD.
pub(crate) fn is_url(src: &str) -> bool {
    let l = src.get(..8).unwrap_or(src).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// A git source of ADD (`git@host:repo`, `git://…`, `ssh://…`, or a URL ending in `.git`,
/// optionally with `#ref`), as BuildKit's `gitutil.ParseGitRef` tells it from a local path.
pub(crate) fn is_git_ref(src: &str) -> bool {
    let base = src.split('#').next().unwrap_or(src);
    src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
        || (is_url(src) && (base.ends_with(".git") || base.contains(".git/")))
}

/// docker's `RAMInBytes`: `64m`, `1g`, `512k`, `1.5GiB`, plain bytes.
pub(crate) fn parse_size(v: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {v:?} (examples: 64m, 1g, 1048576)");
    let t = v.trim();
    let num_len = t
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let n: f64 = t[..num_len].parse().map_err(|_| bad())?;
    let unit = t[num_len..].trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mul: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0f64.powi(2),
        "g" => 1024.0f64.powi(3),
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => return Err(bad()),
    };
    let bytes = n * mul;
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// STOPSIGNAL: a number or a signal name with or without `SIG`.
pub(crate) fn check_signal(v: &str) -> Result<(), String> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if v.parse::<u8>().is_ok_and(|n| n > 0) {
        return Ok(());
    }
    let up = v.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let rt = name
        .strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"));
    let rt_ok = rt.is_some_and(|r| {
        r.is_empty()
            || r.strip_prefix(['+', '-'])
                .is_some_and(|n| n.parse::<u8>().is_ok())
    });
    if NAMES.contains(&name) || rt_ok {
        Ok(())
    } else {
        Err(format!("invalid signal: {v}"))
    }
}

/// EXPOSE: `80`, `80/tcp`, `8000-8010/udp`.
pub(crate) fn check_port(p: &str) -> Result<(), String> {
    let (ports, proto) = match p.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (p, None),
    };
    let port_ok = |s: &str| s.parse::<u16>().is_ok();
    let ports_ok = match ports.split_once('-') {
        Some((a, b)) => port_ok(a) && port_ok(b),
        None => port_ok(ports),
    };
    let proto_ok =
        proto.is_none_or(|p| matches!(p.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp"));
    if ports_ok && proto_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid port {p:?} for EXPOSE (expected PORT[-PORT][/tcp|udp|sctp])"
        ))
    }
}

/// Splits a mount spec like Go's `encoding/csv` reader: commas, `"quoted, fields"`.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if c == '"' && at_start {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in {s:?}")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cur.push(c),
                }
            }
            at_start = false;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            cur.push(c);
            at_start = false;
        }
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v {
        None => Ok(true),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(v) => Err(format!(
            "invalid value for {key}: {v:?} (expected true or false)"
        )),
    }
}

fn parse_num(key: &str, v: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(v, radix).map_err(|_| {
        let what = if radix == 8 {
            "an octal number such as 0755"
        } else {
            "a number"
        };
        format!("invalid value for {key}: {v:?} (expected {what})")
    })
}

/// BuildKit's `\$.`: a `$` with something after it.
fn has_variable(v: &str) -> bool {
    v.char_indices().any(|(i, c)| c == '$' && i + 1 < v.len())
}

/// `RUN --mount=…`: each option value is expanded with `expand`; `from=` is resolved by `resolve`.
pub(crate) fn parse_mount(
    spec: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
    resolve: &mut dyn FnMut(&str) -> Result<Source, String>,
) -> Result<Mount, String> {
    const KEYS: &[&str] = &[
        "type",
        "id",
        "target",
        "dst",
        "destination",
        "source",
        "src",
        "from",
        "readonly",
        "ro",
        "readwrite",
        "rw",
        "required",
        "sharing",
        "mode",
        "uid",
        "gid",
        "size",
        "env",
    ];
    let mut typ = "bind".to_string();
    let (mut id, mut target, mut source, mut from, mut env) = (None, None, None, None, None);
    let (mut ro, mut rw, mut required, mut sharing) = (None::<bool>, None::<bool>, false, None);
    let (mut mode, mut uid, mut gid, mut size) = (None, None, None, None);
    for field in csv_fields(spec)? {
        if field.is_empty() {
            continue;
        }
        let (key, value) = match field.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("from") && has_variable(v) => {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".into(),
                )
            }
            Some((k, v)) => (k.to_ascii_lowercase(), Some(expand(v)?)),
            None => (field.to_ascii_lowercase(), None),
        };
        let need = |v: Option<String>| {
            v.ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))
        };
        match key.as_str() {
            "type" => typ = need(value)?.to_ascii_lowercase(),
            "id" => id = Some(need(value)?),
            "target" | "dst" | "destination" => target = Some(need(value)?),
            "source" | "src" => source = Some(need(value)?),
            "from" => from = Some(need(value)?),
            "env" => env = Some(need(value)?),
            "readonly" | "ro" => ro = Some(parse_bool(&key, value.as_deref())?),
            "readwrite" | "rw" => rw = Some(parse_bool(&key, value.as_deref())?),
            "required" => required = parse_bool(&key, value.as_deref())?,
            "sharing" => {
                let v = need(value)?;
                sharing = Some(match v.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {v:?} (expected shared, private or locked)"
                        ))
                    }
                })
            }
            "mode" => mode = Some(parse_num("mode", &need(value)?, 8)?),
            "uid" => uid = Some(parse_num("uid", &need(value)?, 10)?),
            "gid" => gid = Some(parse_num("gid", &need(value)?, 10)?),
            "size" => size = Some(parse_size(&need(value)?)?),
            _ => {
                return Err(crate::suggest::with_suggestion(
                    format!("unexpected key '{key}' in '{field}'"),
                    &key,
                    KEYS.iter().copied(),
                ))
            }
        }
    }
    const TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];
    if !TYPES.contains(&typ.as_str()) {
        return Err(crate::suggest::with_suggestion(
            format!("unsupported mount type {typ:?} (expected bind, cache, tmpfs, secret or ssh)"),
            &typ,
            TYPES,
        ));
    }
    // As BuildKit's validateMount: options that only some types take.
    let file_info = matches!(typ.as_str(), "secret" | "ssh" | "cache");
    for (name, set) in [
        ("mode", mode.is_some()),
        ("uid", uid.is_some()),
        ("gid", gid.is_some()),
    ] {
        if set && !file_info {
            return Err(format!("{name} not allowed for {typ:?} type mounts"));
        }
    }
    if required && !matches!(typ.as_str(), "secret" | "ssh") {
        return Err(format!("unexpected key 'required' for mount type '{typ}'"));
    }
    if size.is_some() && typ != "tmpfs" {
        return Err(format!("unexpected key 'size' for mount type '{typ}'"));
    }
    if sharing.is_some() && typ != "cache" {
        return Err(format!("invalid cache sharing set for {typ} mount"));
    }
    let writable = match (ro, rw) {
        (Some(r), _) => !r,
        (None, Some(w)) => w,
        (None, None) => typ == "cache" || typ == "tmpfs",
    };
    let need_target = |t: Option<String>| {
        t.filter(|t| !t.is_empty())
            .ok_or_else(|| format!("mount type={typ} requires a target (target=/path)"))
    };
    let reject = |what: &str, present: bool| {
        if present {
            Err(format!("mount type={typ} does not take {what}"))
        } else {
            Ok(())
        }
    };
    let from = match from {
        Some(f) if !f.is_empty() => Some(resolve(&f)?),
        _ => None,
    };
    Ok(match typ.as_str() {
        "bind" => Mount::Bind {
            target: need_target(target)?,
            source,
            from,
            rw: writable,
        },
        "cache" => Mount::Cache {
            id,
            target: need_target(target)?,
            ro: !writable,
            sharing: sharing.unwrap_or(CacheSharing::Shared),
            from,
            source,
            mode,
            uid,
            gid,
        },
        "tmpfs" => {
            reject("from", from.is_some())?;
            Mount::Tmpfs {
                target: need_target(target)?,
                size,
            }
        }
        "secret" => {
            reject("from", from.is_some())?;
            if source.is_some() && id.is_some() {
                return Err("both source and id can't be set for a secret mount".into());
            }
            let id = match id.or(source) {
                Some(i) => i,
                None => match target.as_deref() {
                    Some(t) if !t.is_empty() => t.rsplit('/').next().unwrap_or(t).to_string(),
                    _ => match env.as_deref() {
                        Some(e) => e.to_string(),
                        None => {
                            return Err(
                                "invalid secret mount: one of id, target or env is required".into(),
                            )
                        }
                    },
                },
            };
            let target = match (target, &env) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{id}")),
            };
            Mount::Secret {
                id,
                target,
                env,
                required,
                mode,
                uid,
                gid,
            }
        }
        "ssh" => {
            reject("from", from.is_some())?;
            Mount::Ssh {
                id: id.unwrap_or_else(|| "default".into()),
                target,
                required,
                mode,
                uid,
                gid,
            }
        }
        other => {
            return Err(format!(
                "unsupported mount type {other:?} (expected bind, cache, tmpfs, secret or ssh)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod() {
        assert_eq!(parse_chmod("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(parse_chmod("0644"), Ok(Chmod::Octal(0o644)));
        assert_eq!(
            parse_chmod("u+x,g-w,a=rX"),
            Ok(Chmod::Symbolic("u+x,g-w,a=rX".into()))
        );
        assert!(parse_chmod("999").is_err());
        assert!(parse_chmod("rwx").is_err());
        assert!(parse_chmod("").is_err());
    }

    #[test]
    fn mounts() {
        let ex = |s: &str| Ok(s.to_string());
        let mut res = |s: &str| Ok(Source::Image(s.to_string()));
        let m = parse_mount(
            "type=cache,target=/root/.npm,sharing=locked,mode=0700",
            &ex,
            &mut res,
        )
        .unwrap();
        assert!(matches!(
            m,
            Mount::Cache {
                ro: false,
                sharing: CacheSharing::Locked,
                mode: Some(0o700),
                ..
            }
        ));
        let m = parse_mount("source=a,target=b", &ex, &mut res).unwrap();
        assert_eq!(
            m,
            Mount::Bind {
                target: "b".into(),
                source: Some("a".into()),
                from: None,
                rw: false
            }
        );
        let m = parse_mount("type=secret,id=tok", &ex, &mut res).unwrap();
        assert!(
            matches!(m, Mount::Secret { ref target, .. } if target.as_deref() == Some("/run/secrets/tok"))
        );
        assert!(parse_mount("type=cache", &ex, &mut res).is_err());
        assert!(parse_mount("type=bind,target=/x,tagret=y", &ex, &mut res)
            .unwrap_err()
            .contains("did you mean target"));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
    }
}
