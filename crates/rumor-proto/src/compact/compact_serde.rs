//! Serde adapter for a delta's `Arc<[f32]>`: written as [`CompactValues`], read back to `f32`.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CompactValues;

/// Writes `values` in their densest exact form.
///
/// # Errors
/// Whatever the serializer returns.
pub fn serialize<S: Serializer>(values: &Arc<[f32]>, s: S) -> Result<S::Ok, S::Error> {
    CompactValues::encode(values).serialize(s)
}

/// Reads compact values and decodes them.
///
/// # Errors
/// The deserializer's error, or a custom one carrying [`super::CompactError`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[f32]>, D::Error> {
    let compact = CompactValues::deserialize(d)?;
    compact
        .decode()
        .map(Arc::from)
        .map_err(serde::de::Error::custom)
}
