//! Serde support for a value the configuration file holds as text: read with the type's
//! [`FromStr`], written with its [`Display`], so a file says `model = "784-128-10"` while the
//! program holds the parsed value. Use it as `#[serde(with = "text")]`.
//!
//! A value that does not parse is a deserialization error carrying the type's own message;
//! toml adds the key's line and column.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `value` as its [`Display`] text.
///
/// # Errors
/// The serializer's own.
pub fn serialize<T: Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Reads a string and parses it with [`FromStr`].
///
/// # Errors
/// Not a string, or the parse error's message.
pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
where
    T: FromStr,
    T::Err: Display,
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}
