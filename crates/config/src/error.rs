//! [`ConfigError`]: what went wrong, in which file, at which key, on which line.

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

/// A config that could not be read or is not valid.
///
/// Displayed as one line that names the file (when there is one), the dotted path of the bad key
/// and its position:
///
/// ```text
/// config.toml: limits.max_connections: invalid type: string "x", expected a positive integer (line 12, column 19)
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key is unknown, or its value is of the wrong type or out of range: the file's fault.
    Invalid {
        /// The file, when the config came from one.
        file: Option<PathBuf>,
        /// The dotted path of the bad key, such as `limits.idle_timeout`; empty for the top level.
        key: String,
        /// Where in the text, 1-based, when the parser knows.
        line: Option<usize>,
        /// The column on that line, 1-based, in characters.
        column: Option<usize>,
        /// What is wrong, such as `invalid type: string "x", expected a positive integer`.
        message: String,
    },
    /// An environment variable that the config defers to has a value it cannot take, such as
    /// `SSL_VERIFY_CLIENT=maybe`: the environment's fault.
    Environment {
        /// The variable.
        variable: String,
        /// What is wrong with its value.
        message: String,
    },
    /// The file could not be read: the environment's fault (or a wrong path).
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The text is not TOML: the file's fault.
    Syntax {
        /// The file, when the config came from one.
        file: Option<PathBuf>,
        /// Where in the text, 1-based, when the parser knows.
        line: Option<usize>,
        /// The column on that line, 1-based, in characters.
        column: Option<usize>,
        /// What is wrong, as the TOML parser says it.
        message: String,
    },
}

impl ConfigError {
    /// The dotted path of the bad key, for [`ConfigError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Environment { .. } | Self::Read { .. } | Self::Syntax { .. } => None,
        }
    }

    /// A TOML syntax error in `text`.
    pub(crate) fn syntax(text: &str, error: &toml::de::Error) -> Self {
        let (line, column) = position(text, error.span());
        Self::Syntax {
            file: None,
            line,
            column,
            message: error.message().to_owned(),
        }
    }

    /// A schema error in `text`, with the path serde was at when it failed.
    pub(crate) fn invalid(text: &str, error: &serde_path_to_error::Error<toml::de::Error>) -> Self {
        let (line, column) = position(text, error.inner().span());
        let path = error.path();
        // The top level's path displays as ".": that is no key at all.
        let key = if path.iter().next().is_none() {
            String::new()
        } else {
            path.to_string()
        };
        Self::Invalid {
            file: None,
            key,
            line,
            column,
            message: error.inner().message().to_owned(),
        }
    }

    /// The same error, naming the file it came from.
    pub(crate) fn in_file(mut self, path: &Path) -> Self {
        match &mut self {
            Self::Invalid { file, .. } | Self::Syntax { file, .. } => {
                *file = Some(path.to_path_buf());
            }
            Self::Environment { .. } | Self::Read { .. } => {}
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid {
                file,
                key,
                line,
                column,
                message,
            } => {
                write_file(f, file.as_deref())?;
                if !key.is_empty() {
                    write!(f, "{key}: ")?;
                }
                f.write_str(message)?;
                write_position(f, *line, *column)
            }
            Self::Environment { variable, message } => {
                write!(f, "environment variable {variable}: {message}")
            }
            // The reason is the source, which `{:#}` and error reporters print after this.
            Self::Read { path, .. } => write!(f, "{}: cannot read", path.display()),
            Self::Syntax {
                file,
                line,
                column,
                message,
            } => {
                write_file(f, file.as_deref())?;
                write!(f, "not valid TOML: {message}")?;
                write_position(f, *line, *column)
            }
        }
    }
}

/// `file: `, when there is a file.
fn write_file(f: &mut fmt::Formatter<'_>, file: Option<&Path>) -> fmt::Result {
    match file {
        Some(file) => write!(f, "{}: ", file.display()),
        None => Ok(()),
    }
}

/// ` (line 3, column 7)`, as much of it as is known.
fn write_position(
    f: &mut fmt::Formatter<'_>,
    line: Option<usize>,
    column: Option<usize>,
) -> fmt::Result {
    match (line, column) {
        (Some(line), Some(column)) => write!(f, " (line {line}, column {column})"),
        (Some(line), None) => write!(f, " (line {line})"),
        (None, _) => Ok(()),
    }
}

/// The 1-based line and column (in characters) where `span` starts in `text`.
fn position(text: &str, span: Option<std::ops::Range<usize>>) -> (Option<usize>, Option<usize>) {
    let Some(before) = span.and_then(|span| text.get(..span.start)) else {
        return (None, None);
    };
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (Some(line), Some(column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(position(text, None), (None, None));
        assert_eq!(position(text, Some(0..1)), (Some(1), Some(1)));
        assert_eq!(position(text, Some(6..7)), (Some(2), Some(1)));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(position(text, Some(12..13)), (Some(2), Some(6)));
        assert_eq!(position(text, Some(99..100)), (None, None));
    }
}
