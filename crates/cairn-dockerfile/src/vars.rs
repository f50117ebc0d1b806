//! Variables in scope while planning: ARG and ENV values of a stage (last writer wins, as
//! BuildKit's LLB state env), the global ARGs before the first FROM, and the predefined
//! platform and proxy ARGs.

use crate::shell::Lookup;
use std::collections::HashMap;

/// An ordered set of variables, each remembering whether an ARG or an ENV set it last.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vars {
    order: Vec<String>,
    map: HashMap<String, (String, bool)>,
    /// Every name an ARG declared (with a value or not), in first-declaration order: BuildKit's
    /// `d.buildArgs`, which a RUN's history lists.
    declared: Vec<String>,
}

impl Vars {
    /// Sets `name`; `is_arg` records that an ARG (not an ENV) wrote it.
    pub(crate) fn set(&mut self, name: &str, value: String, is_arg: bool) {
        if !self.map.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.map.insert(name.to_string(), (value, is_arg));
    }

    /// Records that an ARG declared `name`, whether it has a value or not.
    pub(crate) fn declare(&mut self, name: &str) {
        if !self.declared.iter().any(|d| d == name) {
            self.declared.push(name.to_string());
        }
    }

    /// The names ARGs declared, in first-declaration order.
    pub(crate) fn declared(&self) -> &[String] {
        &self.declared
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(|(v, _)| v.as_str())
    }

    /// Every variable in the order it was first set, with its value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(k).map(|(v, _)| (k.as_str(), v.as_str())))
    }

    /// The variables last set by an ARG, in declaration order: a RUN's build-arg environment.
    pub(crate) fn args_env(&self) -> Vec<(String, String)> {
        self.order
            .iter()
            .filter_map(|k| {
                self.map
                    .get(k)
                    .filter(|(_, a)| *a)
                    .map(|(v, _)| (k.clone(), v.clone()))
            })
            .collect()
    }
}

impl Lookup for Vars {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// Proxy ARGs: passed to RUN from `--build-arg` without a declaration, never stored in the image.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The host's platform as an OCI platform string (`linux/amd64`, `linux/arm64`, …).
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm/v7",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    format!("linux/{arch}")
}

/// `os/arch[/variant]` → (os, arch, variant).
pub(crate) fn split_platform(p: &str) -> Result<(String, String, String), String> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => {
            Ok((os.to_lowercase(), arch.to_lowercase(), String::new()))
        }
        [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
            Ok((os.to_lowercase(), arch.to_lowercase(), v.to_lowercase()))
        }
        _ => Err(format!(
            "invalid platform {p:?} (expected os/arch[/variant], e.g. linux/amd64)"
        )),
    }
}

/// The predefined platform ARGs for a target and a build platform.
pub(crate) fn platform_args(target: &str, build: &str) -> Result<Vec<(String, String)>, String> {
    let (tos, tarch, tvar) = split_platform(target)?;
    let (bos, barch, bvar) = split_platform(build)?;
    let join = |os: &str, arch: &str, v: &str| {
        if v.is_empty() {
            format!("{os}/{arch}")
        } else {
            format!("{os}/{arch}/{v}")
        }
    };
    Ok(vec![
        ("TARGETPLATFORM".into(), join(&tos, &tarch, &tvar)),
        ("TARGETOS".into(), tos),
        ("TARGETARCH".into(), tarch),
        ("TARGETVARIANT".into(), tvar),
        ("BUILDPLATFORM".into(), join(&bos, &barch, &bvar)),
        ("BUILDOS".into(), bos),
        ("BUILDARCH".into(), barch),
        ("BUILDVARIANT".into(), bvar),
    ])
}
