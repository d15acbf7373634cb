//! Configuration errors: each names where in the file it is and what was expected.
//!
//! A message never echoes an unbounded part of the file: a TOML syntax error shows at most
//! [`EXCERPT_CHARS`] characters of its line, around the error's column, with `…` where the line
//! was cut; long messages and values are cut the same way.

use std::path::{Path, PathBuf};

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `stages `words`.function`, `plugins.wordcount`; empty for the whole file.
    pub location: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error at `location`.
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self { location: location.into(), message: message.into() }
    }
}

/// Every problem found in one pipeline file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigErrors {
    /// The pipeline file.
    pub file: PathBuf,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error in `file`.
    pub fn one(file: &Path, error: ConfigError) -> Self {
        Self { file: file.to_path_buf(), errors: vec![error] }
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if error.location.is_empty() {
                write!(f, "{}: {}", self.file.display(), error.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file.display(), error.location, error.message)?;
            }
        }
        Ok(())
    }
}

/// The most characters of a line a TOML error shows.
pub const EXCERPT_CHARS: usize = 200;
/// The most characters of a TOML error's message (which may quote a value of the file).
const MESSAGE_CHARS: usize = 500;

/// `text`, or its first `max` characters and `…` if it is longer.
pub(crate) fn shorten(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

/// A TOML error of `text` laid out as the toml crate does (line and column, the line, a caret
/// under the error, the message), with the line cut to [`EXCERPT_CHARS`] around the column so a
/// 2 MB one-line file does not come back whole.
pub(crate) fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = shorten(error.message().trim_end(), MESSAGE_CHARS);
    let Some(span) = error.span() else {
        return shorten(error.to_string().trim_end(), MESSAGE_CHARS).into_owned();
    };
    let mut at = span.start.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line_number = text[..line_start].matches('\n').count() + 1;
    let line = &text[line_start..line_end];
    let column = text[line_start..at].chars().count();
    let length = line.chars().count();
    // A window of EXCERPT_CHARS characters, the column in its middle where the line allows.
    let first = column.saturating_sub(EXCERPT_CHARS / 2).min(length.saturating_sub(EXCERPT_CHARS));
    let last = (first + EXCERPT_CHARS).min(length);
    let before = if first > 0 { "…" } else { "" };
    let after = if last < length { "…" } else { "" };
    let excerpt: String = line.chars().skip(first).take(last - first).collect();
    let highlight = text[at..span.end.clamp(at, line_end)].chars().count().clamp(1, (last - column).max(1));
    let gutter = " ".repeat(line_number.to_string().len() + 1);
    let caret = " ".repeat(column - first + 1 + before.chars().count());
    format!(
        "TOML parse error at line {line_number}, column {}\n{gutter}|\n{line_number} | {before}{excerpt}{after}\n\
         {gutter}|{caret}{}\n{message}",
        column + 1,
        "^".repeat(highlight)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(text: &str) -> String {
        let error = toml::from_str::<toml::Table>(text).unwrap_err();
        toml_error(text, &error)
    }

    #[test]
    fn a_short_line_is_shown_as_the_toml_crate_shows_it() {
        let text = "[pipeline\nname = \"x\"\n";
        let error = toml::from_str::<toml::Table>(text).unwrap_err();
        assert_eq!(toml_error(text, &error), error.to_string().trim_end());
    }

    #[test]
    fn a_long_line_is_cut_around_the_column() {
        let text = format!("a = [{}?, {}]\n", "1, ".repeat(400_000), "2, ".repeat(400_000));
        let shown = parse_error(&text);
        assert!(shown.len() < 1_000, "{} bytes: {shown}", shown.len());
        assert!(shown.starts_with("TOML parse error at line 1, column 1200006\n"), "{shown}");
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[2].starts_with("1 | …") && lines[2].ends_with("2…"), "{shown}");
        assert!(lines[2].contains(" 1, 1, ?, 2, 2, "), "{shown}");
        // The caret is under the `?`.
        let caret = lines[3].find('^').unwrap();
        assert_eq!(lines[2].chars().nth(caret), Some('?'), "{shown}");
    }

    #[test]
    fn errors_near_either_end_of_a_long_line_are_cut_on_one_side() {
        let shown = parse_error(&format!("a = ?{}\n", " ".repeat(100_000)));
        assert!(shown.lines().nth(2).unwrap().starts_with("1 | a = ?") && shown.contains("…\n"), "{shown}");
        let shown = parse_error(&format!("a = [{}?]", "1, ".repeat(100_000)));
        assert!(shown.lines().nth(2).unwrap().ends_with("1, ?]"), "{shown}");
        assert!(shown.lines().nth(2).unwrap().starts_with("1 | …"), "{shown}");
        assert!(shown.len() < 1_000, "{shown}");
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("äbcd", 2), "äb…");
    }
}
