//! Property tests: no input makes the frontend panic, and what it accepts it plans consistently.

use cairn_dockerfile::{parse, plan, PlanOptions};
use proptest::prelude::*;

/// Fragments that reach the interesting paths far more often than random bytes do.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM alpine AS b\n".to_string()),
        Just("FROM b\n".to_string()),
        Just("FROM --platform=$BUILDPLATFORM x\n".to_string()),
        Just("ARG A=${B:-c}\n".to_string()),
        Just("ENV X=$A Y=\"${X%%/*}\"\n".to_string()),
        Just("RUN <<EOF\n".to_string()),
        Just("RUN <<-'E' cat <<F\n".to_string()),
        Just("EOF\n".to_string()),
        Just("COPY --from=0 --chmod=u+x a b\n".to_string()),
        Just("COPY <<EOF /x\n".to_string()),
        Just("RUN --mount=type=cache,target=/c,from=b echo\n".to_string()),
        Just("HEALTHCHECK --interval=1s CMD [\"x\"]\n".to_string()),
        Just("ONBUILD RUN x\n".to_string()),
        Just("# escape=`\n".to_string()),
        Just("RUN a \\\n".to_string()),
        Just("\t\n".to_string()),
        Just("# c\n".to_string()),
        "[ -~\t\n\\\\$`{}\"']{0,40}".prop_map(|s| s),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Ok(df) = parse("Dockerfile", &text) {
            let _ = plan(&df, &PlanOptions::default(), &|_| None);
        }
    }

    #[test]
    fn dockerfile_like_text_never_panics(parts in prop::collection::vec(fragment(), 0..12), target in prop::option::of("[a-z]{1,3}")) {
        let text: String = parts.concat();
        let opts = PlanOptions { target, ..PlanOptions::default() };
        match parse("Dockerfile", &text) {
            Ok(df) => {
                if let Ok(p) = plan(&df, &opts, &|_| None) {
                    // Dependencies come first and the target last.
                    for (i, s) in p.stages.iter().enumerate() {
                        for d in &s.deps {
                            prop_assert!(p.stages[..i].iter().any(|e| e.index == *d));
                        }
                    }
                    let _ = cairn_dockerfile::outline(&p);
                }
            }
            Err(e) => {
                // Every error renders, and names the file.
                prop_assert!(e.to_string().starts_with("Dockerfile"));
            }
        }
    }
}
