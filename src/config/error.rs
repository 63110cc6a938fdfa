//! Why a configuration could not be loaded or is not valid, and the helpers that build the
//! errors naming a key.

use std::path::PathBuf;

/// Why a configuration could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, bad value).
    #[error("config file {} is not valid", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's error, naming the key and position.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `train.batch_size`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// `Ok` if `ok`, else [`ConfigError::Invalid`] for `key` saying `message`.
pub(super) fn check(ok: bool, key: &'static str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, message))
    }
}

/// [`ConfigError::Invalid`] for `key` saying `message`.
pub(super) fn invalid(key: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}
