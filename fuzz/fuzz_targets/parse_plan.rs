//! Feeds arbitrary bytes to the Dockerfile frontend: parse, plan (without base images, and with
//! one whose ONBUILD trigger is the input's first line), and render. Any panic is a bug: user
//! input must only ever give errors.
#![no_main]

use cairn_dockerfile::{outline, parse, plan, targets_table, BaseImageInfo, PlanOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trigger = text.lines().next().unwrap_or_default().to_string();
    let with_triggers = move |_: &str| {
        Some(BaseImageInfo {
            env: vec![("PATH".into(), "/bin".into())],
            onbuild: vec![trigger.clone()],
        })
    };
    match parse("Dockerfile", text) {
        Ok(df) => {
            let _ = targets_table(&df);
            for target in [None, Some("b".to_string())] {
                let opts = PlanOptions {
                    target,
                    ..PlanOptions::default()
                };
                if let Ok(p) = plan(&df, &opts, &|_| None) {
                    let _ = outline(&p);
                }
                if let Ok(p) = plan(&df, &opts, &with_triggers) {
                    let _ = outline(&p);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
