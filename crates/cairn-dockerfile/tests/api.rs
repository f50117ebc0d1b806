//! The public API as other crates and the CLI use it: error text, JSON dump, targets.

use cairn_dockerfile::{parse, plan, targets_table, Base, PlanOptions, Source, StepKind};

#[test]
fn error_text_is_file_line_column_message_quote_and_caret() {
    let err = parse("app/Dockerfile", "FROM alpine\n\tCOPPY . /app\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "app/Dockerfile:2:2: unknown instruction: COPPY (did you mean COPY?)\n 2 |  COPPY . /app\n   |  ^^^^^"
    );
    assert_eq!((err.line, err.column), (2, 2));
}

#[test]
fn json_dump_has_spans_flags_args_and_heredocs() {
    let df = parse(
        "Dockerfile",
        "FROM a AS b\nCOPY --chmod=755 <<EOF /x\nhi\nEOF\n",
    )
    .unwrap();
    let v = serde_json::to_value(&df).unwrap();
    let copy = &v["instructions"][1];
    assert_eq!(copy["keyword"], "COPY");
    assert_eq!(copy["span"]["line"], 2);
    assert_eq!(copy["span"]["end_line"], 4);
    assert_eq!(copy["flags"][0]["name"], "chmod");
    assert_eq!(copy["flags"][0]["column"], 6);
    assert_eq!(copy["args"]["Copy"]["dest"], "/x");
    assert_eq!(copy["heredocs"][0]["content"], "hi\n");
}

#[test]
fn targets_show_line_base_and_description() {
    let df = parse(
        "Dockerfile",
        "# Build it\nFROM golang AS build\n\n# Ship it\nFROM scratch AS run\n",
    )
    .unwrap();
    let t = targets_table(&df);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[1], "build          2     golang   Build it");
    assert_eq!(lines[2], "run (default)  5     scratch  Ship it");
}

#[test]
fn plan_contract_for_the_engine() {
    let text = "ARG V=1\nFROM alpine AS deps\nARG V\nRUN echo $V\nFROM deps\nCOPY --from=deps /a /b\nCOPY --from=nginx /c /d\n";
    let df = parse("Dockerfile", text).unwrap();
    let p = plan(&df, &PlanOptions::default(), &|_| None).unwrap();
    assert_eq!(p.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(p.stages[1].base, Base::Stage(0));
    assert_eq!(p.stages[1].deps, [0]);
    let StepKind::Run(r) = &p.stages[0].steps[1].kind else {
        panic!()
    };
    assert_eq!(r.args_env, [("V".to_string(), "1".to_string())]);
    let StepKind::Copy(c) = &p.stages[1].steps[1].kind else {
        panic!()
    };
    assert_eq!(c.from, Some(Source::Image("nginx".into())));
    assert!(p.skipped.is_empty());
    assert_eq!(p.target, "1");
}
