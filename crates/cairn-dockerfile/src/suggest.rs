//! "did you mean …?" suggestions, by edit distance (strsim), as BuildKit's `suggest` package does.

/// The candidate closest to `word` (case-insensitive), if it is close enough to be a likely typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lw = word.to_lowercase();
    let mut best: Option<(&'a str, usize)> = None;
    for c in candidates {
        let d = strsim::damerau_levenshtein(&lw, &c.to_lowercase());
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    let (c, d) = best?;
    // Allow about one edit per three characters, at least one, as BuildKit's suggest does.
    let allowed = (lw.chars().count() / 3).max(1);
    (d > 0 && d <= allowed).then_some(c)
}

/// `message` with ` (did you mean X?)` appended when a close candidate exists.
pub fn with_suggestion<'a, I>(message: String, word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match closest(word, candidates) {
        Some(c) => format!("{message} (did you mean {c}?)"),
        None => message,
    }
}
