//! Each rule: a Dockerfile that triggers it, and the fixed one that does not.

use super::*;

/// Every base image is known with an empty Env and User root, unless it is `nonroot:*`.
fn base(r: &str) -> Option<BaseInfo> {
    Some(BaseInfo {
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        shell: false,
        user: if r.starts_with("nonroot") {
            "65532".into()
        } else {
            String::new()
        },
    })
}

fn run(text: &str) -> Vec<Finding> {
    run_with(
        text,
        &LintOptions {
            base: Some(&base),
            ..LintOptions::default()
        },
    )
}

fn run_with(text: &str, opts: &LintOptions<'_>) -> Vec<Finding> {
    let df = cairn_dockerfile::parse("Dockerfile", text).expect("parses");
    lint(&df, opts)
}

fn rules(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule.as_str()).collect()
}

/// The tail every case shares so that the checklist rules stay quiet.
const OK_TAIL: &str = "USER 65532\n";

#[track_caller]
fn case(rule: &str, bad: &str, good: &str, line: usize, message: &str) {
    assert!(
        crate::RULES
            .iter()
            .any(|r| r.name == rule && r.on == "dockerfile"),
        "{rule} not in RULES"
    );
    let bad_f = run(bad);
    let hit: Vec<&Finding> = bad_f.iter().filter(|f| f.rule == rule).collect();
    assert!(
        !hit.is_empty(),
        "{rule} not reported for:\n{bad}\ngot {:?}",
        rules(&bad_f)
    );
    assert_eq!(hit[0].line, line, "{rule}: line");
    assert_eq!(hit[0].message, message, "{rule}: message");
    assert!(!hit[0].hint.is_empty());
    let good_f = run(good);
    assert!(
        !good_f.iter().any(|f| f.rule == rule),
        "{rule} still reported for the fixed file:\n{good}\n{good_f:?}"
    );
}

#[test]
fn stage_name_casing() {
    case(
        "StageNameCasing",
        &format!("FROM alpine:3.20 AS Builder\n{OK_TAIL}"),
        &format!("FROM alpine:3.20 AS builder\n{OK_TAIL}"),
        1,
        "Stage name 'Builder' should be lowercase",
    );
}

#[test]
fn from_as_casing() {
    case(
        "FromAsCasing",
        &format!("FROM alpine:3.20 as build\n{OK_TAIL}"),
        &format!("FROM alpine:3.20 AS build\n{OK_TAIL}"),
        1,
        "'as' and 'FROM' keywords' casing do not match",
    );
    // lower-case FROM with lower-case as is consistent.
    assert!(!rules(&run("from alpine:3.20 as build\nuser 1\n")).contains(&"FromAsCasing"));
}

#[test]
fn no_empty_continuation() {
    case(
        "NoEmptyContinuation",
        &format!("FROM alpine:3.20\nRUN echo a \\\n\n  && echo b\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nRUN echo a \\\n  && echo b\n{OK_TAIL}"),
        2,
        "Empty continuation line",
    );
}

#[test]
fn consistent_instruction_casing() {
    case(
        "ConsistentInstructionCasing",
        &format!("FROM alpine:3.20\nRUN true\nrun true\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nRUN true\nRUN true\n{OK_TAIL}"),
        3,
        "Command 'run' should match the case of the command majority (uppercase)",
    );
}

#[test]
fn duplicate_and_reserved_stage_names() {
    case(
        "DuplicateStageName",
        &format!("FROM alpine:3.20 AS a\nFROM alpine:3.20 AS a\n{OK_TAIL}"),
        &format!("FROM alpine:3.20 AS a\nFROM alpine:3.20 AS b\n{OK_TAIL}"),
        2,
        "Duplicate stage name \"a\", stage names should be unique",
    );
    case(
        "ReservedStageName",
        &format!("FROM alpine:3.20 AS scratch\n{OK_TAIL}"),
        &format!("FROM alpine:3.20 AS base\n{OK_TAIL}"),
        1,
        "Stage name should not use the same name as reserved stage \"scratch\"",
    );
}

#[test]
fn json_args_recommended() {
    case(
        "JSONArgsRecommended",
        &format!("FROM alpine:3.20\n{OK_TAIL}CMD ./server\n"),
        &format!("FROM alpine:3.20\n{OK_TAIL}CMD [\"./server\"]\n"),
        3,
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
    );
    // An explicit SHELL says the shell form is meant.
    let f = run("FROM alpine:3.20\nSHELL [\"/bin/ash\", \"-c\"]\nUSER 1\nENTRYPOINT ./server\n");
    assert!(!rules(&f).contains(&"JSONArgsRecommended"));
    // ... also when set in the parent stage.
    let f =
        run("FROM alpine:3.20 AS a\nSHELL [\"/bin/ash\", \"-c\"]\nFROM a\nUSER 1\nCMD ./server\n");
    assert!(!rules(&f).contains(&"JSONArgsRecommended"));
}

#[test]
fn maintainer_deprecated() {
    case(
        "MaintainerDeprecated",
        &format!("FROM alpine:3.20\nMAINTAINER me@example.com\n{OK_TAIL}"),
        &format!(
            "FROM alpine:3.20\nLABEL org.opencontainers.image.authors=me@example.com\n{OK_TAIL}"
        ),
        2,
        "Maintainer instruction is deprecated in favor of using label",
    );
}

#[test]
fn undefined_arg_in_from() {
    case(
        "UndefinedArgInFrom",
        &format!("ARG VERSION=3.20\nFROM alpine:${{VERSON}}\n{OK_TAIL}"),
        &format!("ARG VERSION=3.20\nFROM alpine:${{VERSION}}\n{OK_TAIL}"),
        2,
        "FROM argument 'VERSON' is not declared (did you mean VERSION?)",
    );
    // Platform ARGs are predefined.
    assert!(
        !rules(&run("FROM --platform=$BUILDPLATFORM alpine:3.20\nUSER 1\n"))
            .contains(&"UndefinedArgInFrom")
    );
}

#[test]
fn invalid_default_arg_in_from() {
    case(
        "InvalidDefaultArgInFrom",
        &format!("ARG TAG\nFROM alpine:${{TAG}}\n{OK_TAIL}"),
        &format!("ARG TAG=3.20\nFROM alpine:${{TAG}}\n{OK_TAIL}"),
        2,
        "Default value for ARG alpine:${TAG} results in empty or invalid base image name",
    );
}

#[test]
fn workdir_relative_path() {
    case(
        "WorkdirRelativePath",
        &format!("FROM alpine:3.20\nWORKDIR app\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nWORKDIR /srv\nWORKDIR app\n{OK_TAIL}"),
        2,
        "Relative workdir \"app\" can have unexpected results if the base image changes",
    );
}

#[test]
fn undefined_var() {
    case(
        "UndefinedVar",
        &format!("FROM alpine:3.20\nARG APP_DIR=/app\nCOPY . $APP_DIRR\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nARG APP_DIR=/app\nCOPY . $APP_DIR\n{OK_TAIL}"),
        3,
        "Usage of undefined variable '$APP_DIRR' (did you mean $APP_DIR?)",
    );
    // The base image's Env defines PATH; a default (${X:-d}) is a planned absence.
    let f = run("FROM alpine:3.20\nENV PATH=/x:$PATH\nWORKDIR ${HOME:-/root}\nUSER 1\n");
    assert!(!rules(&f).contains(&"UndefinedVar"), "{f:?}");
    // A global ARG is not in scope inside a stage until it is declared there.
    let f = run("ARG V=1\nFROM alpine:3.20\nLABEL v=$V\nUSER 1\n");
    assert!(rules(&f).contains(&"UndefinedVar"));
    let f = run("ARG V=1\nFROM alpine:3.20\nARG V\nLABEL v=$V\nUSER 1\n");
    assert!(!rules(&f).contains(&"UndefinedVar"));
    // An unknown base image could define anything: silent.
    let opts = LintOptions::default();
    let f = run_with("FROM alpine:3.20\nCOPY . $WHATEVER\nUSER 1\n", &opts);
    assert!(!rules(&f).contains(&"UndefinedVar"));
}

#[test]
fn multiple_instructions_disallowed() {
    case(
        "MultipleInstructionsDisallowed",
        &format!("FROM alpine:3.20\n{OK_TAIL}CMD [\"a\"]\nCMD [\"b\"]\n"),
        &format!("FROM alpine:3.20\n{OK_TAIL}CMD [\"b\"]\n"),
        3,
        "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
    );
}

#[test]
fn legacy_key_value_format() {
    case(
        "LegacyKeyValueFormat",
        &format!("FROM alpine:3.20\nENV MODE production\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nENV MODE=production\n{OK_TAIL}"),
        2,
        "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    case(
        "SecretsUsedInArgOrEnv",
        &format!("FROM alpine:3.20\nARG GITHUB_TOKEN\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nARG GITHUB_USER\n{OK_TAIL}"),
        2,
        "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")",
    );
    let f = run("FROM alpine:3.20\nENV PUBLIC_KEY=x KEY_FILE=/k TOKEN_VERSION=2\nUSER 1\n");
    assert!(!rules(&f).contains(&"SecretsUsedInArgOrEnv"), "{f:?}");
    let f = run("FROM alpine:3.20\nENV DB_PASSWORD=x\nUSER 1\n");
    assert!(rules(&f).contains(&"SecretsUsedInArgOrEnv"));
}

#[test]
fn expose_rules() {
    case(
        "ExposeProtoCasing",
        &format!("FROM alpine:3.20\nEXPOSE 80/TCP\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nEXPOSE 80/tcp\n{OK_TAIL}"),
        2,
        "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase",
    );
    case(
        "ExposeInvalidFormat",
        &format!("FROM alpine:3.20\nEXPOSE 127.0.0.1:80:80\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\nEXPOSE 80\n{OK_TAIL}"),
        2,
        "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
    );
}

#[test]
fn copy_ignored_file() {
    let ignored = |p: &str| p == "secrets" || p.starts_with("secrets/");
    let opts = LintOptions {
        base: Some(&base),
        ignored: Some(&ignored),
        ..LintOptions::default()
    };
    let f = run_with("FROM alpine:3.20\nCOPY ./secrets/a.txt /a\nUSER 1\n", &opts);
    let hit = f
        .iter()
        .find(|f| f.rule == "CopyIgnoredFile")
        .expect("reported");
    assert_eq!(
        hit.message,
        "Attempting to Copy file \"secrets/a.txt\" that is excluded by .dockerignore"
    );
    let f = run_with(
        "FROM alpine:3.20\nCOPY app.txt /a\nCOPY --from=x /secrets /s\nUSER 1\n",
        &opts,
    );
    assert!(!rules(&f).contains(&"CopyIgnoredFile"));
}

#[test]
fn unpinned_base_image() {
    case(
        "UnpinnedBaseImage",
        &format!("FROM alpine:latest\n{OK_TAIL}"),
        &format!("FROM alpine:3.20\n{OK_TAIL}"),
        1,
        "Base image 'alpine:latest' is not pinned: 'latest' moves",
    );
    assert!(rules(&run("FROM alpine\nUSER 1\n")).contains(&"UnpinnedBaseImage"));
    assert!(!rules(&run("FROM alpine@sha256:0123\nUSER 1\n")).contains(&"UnpinnedBaseImage"));
    // A stage used as a base is not an image to pin.
    let f = run("FROM alpine:3.20 AS a\nFROM a\nUSER 1\n");
    assert!(!rules(&f).contains(&"UnpinnedBaseImage"), "{f:?}");
}

#[test]
fn final_stage_runs_as_root() {
    case(
        "FinalStageRunsAsRoot",
        "FROM golang:1.21 AS build\nUSER 1000\nFROM alpine:3.20\nCOPY --from=build /x /x\n",
        "FROM golang:1.21 AS build\nFROM alpine:3.20\nCOPY --from=build /x /x\nUSER 10001\n",
        3,
        "The final stage runs as root (no USER instruction)",
    );
    let f = run("FROM alpine:3.20\nUSER app\nUSER root\n");
    assert_eq!(
        f.iter()
            .find(|f| f.rule == "FinalStageRunsAsRoot")
            .map(|f| f.line),
        Some(3)
    );
    // A base image that already runs as a user is fine.
    assert!(!rules(&run("FROM nonroot:1\n")).contains(&"FinalStageRunsAsRoot"));
    // --target picks the final stage.
    let opts = LintOptions {
        base: Some(&base),
        target: Some("build".into()),
        ..LintOptions::default()
    };
    let f = run_with(
        "FROM golang:1.21 AS build\nFROM alpine:3.20\nUSER 1\n",
        &opts,
    );
    assert!(rules(&f).contains(&"FinalStageRunsAsRoot"));
}

#[test]
fn single_stage_toolchain() {
    case(
        "SingleStageToolchain",
        "FROM golang:1.21\nWORKDIR /app\nCOPY . .\nRUN go build -o server .\nUSER 1\nCMD [\"./server\"]\n",
        "FROM golang:1.21 AS builder\nWORKDIR /app\nCOPY . .\nRUN go build -o server .\nFROM alpine:3.20\nCOPY --from=builder /app/server /server\nUSER 1\nCMD [\"/server\"]\n",
        1,
        "Single-stage build: the toolchain image 'golang:1.21' is also the final image",
    );
    let f = run("FROM debian:12\nRUN apt-get update && apt-get install -y gcc\nUSER 1\n");
    assert_eq!(
        f.iter()
            .find(|f| f.rule == "SingleStageToolchain")
            .map(|f| f.line),
        Some(2)
    );
}

#[test]
fn the_tutorial_multi_stage_go_file_is_clean_but_for_the_checklist() {
    let text = "# Stage 1: Build\nFROM golang:1.21 AS builder\nWORKDIR /app\nCOPY go.mod ./\nCOPY main.go ./\nRUN CGO_ENABLED=0 GOOS=linux go build -a -installsuffix cgo -o server .\n\nFROM alpine:latest\nRUN apk --no-cache add ca-certificates\nWORKDIR /root/\nCOPY --from=builder /app/server .\nEXPOSE 8080\nCMD [\"./server\"]\n";
    let f = run(text);
    assert_eq!(
        rules(&f),
        vec!["UnpinnedBaseImage", "FinalStageRunsAsRoot"],
        "{f:?}"
    );
}

#[test]
fn urls_name_the_buildkit_pages() {
    assert_eq!(
        buildkit_url("JSONArgsRecommended").as_deref(),
        Some("https://docs.docker.com/go/dockerfile/rule/json-args-recommended/")
    );
    assert_eq!(
        buildkit_url("FromAsCasing").as_deref(),
        Some("https://docs.docker.com/go/dockerfile/rule/from-as-casing/")
    );
    assert_eq!(buildkit_url("UnpinnedBaseImage"), None);
}

#[test]
fn check_directive_skips_and_errors() {
    let c = crate::CheckConfig::from_directive("skip=FromAsCasing,UnpinnedBaseImage;error=true");
    assert!(c.error && !c.enabled("FromAsCasing") && c.enabled("StageNameCasing"));
    let text = "# check=skip=FromAsCasing\nFROM alpine:3.20 as b\nUSER 1\n";
    let df = cairn_dockerfile::parse("Dockerfile", text).unwrap();
    let cfg = crate::CheckConfig::from_directive(df.directives.check.as_deref().unwrap());
    let r = crate::Report::new("Dockerfile", run(text), &cfg);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let r = crate::Report::new(
        "Dockerfile",
        run("FROM alpine:3.20 as b\nUSER 1\n"),
        &crate::CheckConfig::default(),
    );
    assert_eq!(r.exit_code(), 0);
    let strict = crate::CheckConfig {
        error: true,
        ..Default::default()
    };
    let r = crate::Report::new(
        "Dockerfile",
        run("FROM alpine:3.20 as b\nUSER 1\n"),
        &strict,
    );
    assert_eq!(r.exit_code(), 1);
    let mut out = Vec::new();
    r.render_human(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n  at Dockerfile:1\n"), "{text}");
    let c = crate::CheckConfig::from_directive("skip=all");
    assert!(!c.enabled("UndefinedVar"));
}

#[test]
fn rule_names_are_unique_and_buildkit_ones_have_a_url() {
    let mut names: Vec<&str> = crate::RULES.iter().map(|r| r.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), crate::RULES.len());
    let with_url = crate::RULES
        .iter()
        .filter(|r| buildkit_url(r.name).is_some())
        .count();
    assert_eq!(with_url, 18);
}
