//! Differential test of the `.dockerignore` matcher: for random patterns and paths it must agree
//! with a regular expression built the way moby/patternmatcher builds one (its `compile`).

use cairn_build::context::pattern::{Pattern, Syntax};
use proptest::prelude::*;

/// patternmatcher's translation of a (cleaned, Unix) pattern into a regular expression.
fn patternmatcher_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.get(i) {
                Some(n) => {
                    re.push_str(&regex::escape(&n.to_string()));
                    i += 1;
                }
                None => re.push_str("\\\\"),
            },
            c => re.push(c),
        }
    }
    re.push('$');
    re
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    let tok = prop_oneof![
        Just("a"),
        Just("b"),
        Just("/"),
        Just("*"),
        Just("**"),
        Just("?"),
        Just("."),
        Just("[ab]"),
        Just("[^a]"),
        Just("\\*"),
    ];
    prop::collection::vec(tok, 1..7).prop_map(|v| v.concat())
}

fn path_strategy() -> impl Strategy<Value = String> {
    let tok = prop_oneof![Just("a"), Just("b"), Just("/"), Just("."), Just("*")];
    prop::collection::vec(tok, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn matcher_agrees_with_patternmatcher_regex(p in pattern_strategy(), path in path_strategy()) {
        let ours = Pattern::new(&p, Syntax::Docker).unwrap().matches(&path);
        let re = regex::Regex::new(&patternmatcher_regex(&p)).unwrap();
        prop_assert_eq!(ours, re.is_match(&path), "pattern {:?} path {:?} regex {}", p, path, re.as_str());
    }
}
