//! One error type for the library. Every variant names what was wrong (a file, a
//! tensor, a config field, a request parameter) so the CLI can print it as is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A file whose contents do not follow its format (truncated, corrupt header, ...).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// A config.json that is missing a field or asks for something we do not support.
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    /// A weight tensor that is missing or has the wrong shape or dtype.
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A request the engine cannot serve (prompt too long, bad sampling parameter, ...).
    #[error("{0}")]
    Request(String),

    #[error("device: {0}")]
    Device(String),

    /// An external step (pip download, unpacking) that failed.
    #[error("{0}")]
    External(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { name: name.into(), msg: msg.into() }
    }
}
