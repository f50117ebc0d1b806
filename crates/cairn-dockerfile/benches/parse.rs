//! `cargo bench -p cairn-dockerfile --bench parse` (or `bench/parse`): times parse + plan of a
//! generated 5,000-line multi-stage Dockerfile and prints the figure (target: < 20 ms).

use cairn_dockerfile::{parse, plan, BaseImageInfo, BaseLookup, PlanOptions};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// A Dockerfile of `lines` lines that exercises what real files use: global ARGs, many stages
/// with COPY --from and RUN --mount from=, continuations, heredocs, ENV/ARG expansion.
fn generate(lines: usize) -> String {
    let mut s =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:12\nARG VERSION=1.2.3\n");
    let mut stage = 0;
    while s.lines().count() < lines {
        if stage == 0 {
            let _ = writeln!(s, "FROM ${{BASE}} AS s{stage}");
        } else {
            let _ = writeln!(s, "FROM s{} AS s{stage}", stage - 1);
        }
        let _ = writeln!(s, "ARG VERSION\nARG PREFIX=/opt/app-${{VERSION%%.*}}\nENV APP_HOME=$PREFIX/s{stage} PATH=$PREFIX/bin:$PATH");
        for k in 0..10 {
            let _ = writeln!(s, "RUN --mount=type=cache,target=/root/.cache/{k},id=c{stage} \\\n    echo \"${{APP_HOME}} step {k}\" \\\n    && make -C $APP_HOME target-{k}");
            let _ = writeln!(
                s,
                "COPY --chmod=0644 --chown=1000:1000 src/{k}/ ${{APP_HOME}}/{k}/"
            );
            let _ = writeln!(s, "LABEL s{stage}.k{k}=\"${{VERSION}}-${{APP_HOME##*/}}\"");
        }
        if stage > 1 {
            let _ = writeln!(s, "COPY --from=s{} /opt /opt-prev", stage - 2);
        }
        let _ = writeln!(
            s,
            "COPY <<EOF /etc/s{stage}.conf\nhome=$APP_HOME\nversion=$VERSION\nEOF"
        );
        let _ = writeln!(
            s,
            "WORKDIR $APP_HOME\nEXPOSE 80{:02}\nCMD [\"/bin/app\", \"--stage\", \"{stage}\"]",
            stage % 100
        );
        stage += 1;
    }
    s
}

/// Median, min and max of `runs` timings of parse + plan with `lookup`.
fn time(text: &str, lookup: BaseLookup) -> (Duration, Duration, Duration, usize) {
    let opts = PlanOptions::default();
    let mut times: Vec<Duration> = Vec::new();
    let mut stages = 0;
    for _ in 0..30 {
        let t = Instant::now();
        let df = parse("Dockerfile", text).expect("the generated Dockerfile parses");
        let p = plan(&df, &opts, lookup).expect("the generated Dockerfile plans");
        times.push(t.elapsed());
        stages = p.stages.len();
    }
    times.sort();
    (
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        stages,
    )
}

fn main() {
    let text = generate(5_000);
    let n_lines = text.lines().count();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let image = |_: &str| {
        Some(BaseImageInfo {
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            onbuild: vec![],
        })
    };
    let cases: [(&str, BaseLookup); 2] = [
        ("no base-image config", &|_| None),
        ("base-image ENV known", &image),
    ];
    for (what, lookup) in cases {
        let (median, min, max, stages) = time(&text, lookup);
        println!(
            "parse+plan of a {n_lines}-line Dockerfile ({stages} stages, {what}): median {:.2} ms, min {:.2} ms, max {:.2} ms (target < 20 ms){}",
            ms(median),
            ms(min),
            ms(max),
            if median > Duration::from_millis(20) { "  ** OVER TARGET **" } else { "" }
        );
    }
}
