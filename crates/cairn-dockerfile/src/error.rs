//! Frontend errors: `file:line:col: message`, then the quoted source line and a caret under the
//! column, so that a user sees exactly where the Dockerfile went wrong.

use std::fmt;

/// A frontend error (parse or plan). Its `Display` is the whole user-facing text:
///
/// ```text
/// Dockerfile:12:1: unknown instruction: COPPY (did you mean COPY?)
///    12 | COPPY . /app
///       | ^^^^^
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file name given to [`crate::parse`].
    pub file: String,
    /// 1-based line (0 when the error has no position, e.g. an unknown `--target`).
    pub line: usize,
    /// 1-based column in characters.
    pub column: usize,
    /// What went wrong, with a suggestion when one is known.
    pub message: String,
    /// The source line that is quoted under the message (empty: no quote).
    pub source_line: String,
    /// How many characters the caret line underlines (at least 1 when quoted).
    pub width: usize,
}

impl Error {
    /// An error with no source position (the quote and caret are left out).
    pub fn plain(file: &str, message: impl Into<String>) -> Error {
        Error {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: message.into(),
            source_line: String::new(),
            width: 0,
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if !self.source_line.is_empty() {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            // Tabs would shift the caret: show them as single spaces.
            let quoted: String = self
                .source_line
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            let col = self.column.max(1);
            let len = quoted.chars().count();
            let width = self.width.max(1).min((len + 1).saturating_sub(col).max(1));
            write!(
                f,
                "\n {num} | {quoted}\n {pad} | {}{}",
                " ".repeat(col - 1),
                "^".repeat(width)
            )?;
        }
        Ok(())
    }
}
