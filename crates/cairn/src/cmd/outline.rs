//! `cairn build --print=outline|targets` (`docker build --call=outline` is the anchor): what
//! would be built, without building.

use super::build::BuildArgs;
use crate::Global;
use anyhow::{bail, Context};
use cairn_dockerfile::PlanOptions;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Reads the Dockerfile named by `-f` (default `CONTEXT/Dockerfile`, `-` for stdin).
/// Returns the name used in messages and the text.
pub fn read_dockerfile(file: Option<&str>, context: &str) -> anyhow::Result<(String, String)> {
    let path = match file {
        Some(f) => f.to_string(),
        // `cairn build -` with no -f: the Dockerfile itself comes on stdin.
        None if context == "-" => "-".to_string(),
        None => Path::new(context)
            .join("Dockerfile")
            .to_string_lossy()
            .into_owned(),
    };
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("failed to read the Dockerfile from stdin")?;
        if buf.len() > 262 && &buf[257..262] == b"ustar" {
            bail!("stdin holds a tar archive: give the Dockerfile with -f to print an outline");
        }
        let text = String::from_utf8(buf).context("the Dockerfile on stdin is not UTF-8 text")?;
        return Ok(("<stdin>".into(), text));
    }
    let bytes =
        std::fs::read(&path).with_context(|| format!("failed to read Dockerfile {path}"))?;
    let text =
        String::from_utf8(bytes).with_context(|| format!("Dockerfile {path} is not UTF-8 text"))?;
    Ok((path, text))
}

/// `--build-arg K=V`, or `--build-arg K` to take K from the environment (skipped when unset).
pub fn build_args(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg {a:?}: the name is empty"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if a.is_empty() => bail!("invalid --build-arg: empty"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

pub fn print(args: &BuildArgs, request: &str, _g: &Global) -> anyhow::Result<i32> {
    let (name, text) = read_dockerfile(args.file.as_deref(), &args.context)?;
    let df = cairn_dockerfile::parse(&name, &text)?;
    match request {
        "outline" => {
            let opts = PlanOptions {
                target: args.target.clone(),
                build_args: build_args(&args.build_args)?,
                target_platform: args.platform.clone(),
                ..PlanOptions::default()
            };
            let plan = cairn_dockerfile::plan(&df, &opts, &|_image| None)?;
            print!("{}", cairn_dockerfile::outline(&plan));
        }
        "targets" => print!("{}", cairn_dockerfile::targets_table(&df)),
        other => bail!("unknown --print request {other:?}: expected outline or targets"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_forms() {
        std::env::set_var("CAIRN_TEST_FROM_ENV", "env-value");
        let raw = [
            "A=1",
            "B=",
            "C=x=y",
            "CAIRN_TEST_FROM_ENV",
            "CAIRN_TEST_UNSET_XYZ",
        ]
        .map(String::from);
        let got = build_args(&raw).unwrap();
        assert_eq!(got.get("A").map(String::as_str), Some("1"));
        assert_eq!(got.get("B").map(String::as_str), Some(""));
        assert_eq!(got.get("C").map(String::as_str), Some("x=y"));
        assert_eq!(
            got.get("CAIRN_TEST_FROM_ENV").map(String::as_str),
            Some("env-value")
        );
        assert!(!got.contains_key("CAIRN_TEST_UNSET_XYZ"));
        assert!(build_args(&["=v".to_string()]).is_err());
    }

    #[test]
    fn missing_dockerfile_names_the_path() {
        let err = read_dockerfile(None, "/nonexistent-cairn-ctx").unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent-cairn-ctx/Dockerfile"),
            "{err:#}"
        );
    }
}
