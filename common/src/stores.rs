//! The store registry as every stage reads it: a JSON-lines file of `StoreRecord`s loaded
//! at start, kept current from the compacted `stores.v1` topic, and the H3 grid of a
//! store. Ingest keeps device keys per store; the aggregator keeps active stores per grid
//! (`stores_expected`); both implement [`StoreSink`] and share this loader and follower.

use std::path::Path;
use std::sync::Arc;

use h3o::{LatLng, Resolution};
use nearfield_schemas::{Codec, StoreRecord};
use rdkafka::error::KafkaResult;

use crate::kafka::KafkaSettings;

/// The H3 cell of a location at `resolution`, as lower-case hex.
pub fn grid_of(lat: f64, lon: f64, resolution: Resolution) -> Result<String, String> {
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("lat {lat} is outside -90..=90"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("lon {lon} is outside -180..=180"));
    }
    let ll = LatLng::new(lat, lon).map_err(|e| format!("invalid location: {e}"))?;
    Ok(ll.to_cell(resolution).to_string())
}

/// Something that keeps a view of the registry.
pub trait StoreSink: Send + Sync {
    /// Inserts or replaces a store; the error says what is wrong with the record.
    fn upsert(&self, rec: &StoreRecord) -> Result<(), String>;
    /// Removes a store (a tombstone on `stores.v1`).
    fn remove(&self, store_id: &str);
    /// Called after each change from the topic (metrics).
    fn changed(&self) {}
}

/// A registry file is unusable (see [`crate::jsonl`]).
pub type StoreFileError = crate::jsonl::FileError;

/// Loads a JSON-lines file of `StoreRecord`s into `sink`; blank lines and `#` comments are
/// skipped. Returns the number of stores loaded.
pub fn load_file(path: &Path, sink: &dyn StoreSink) -> Result<usize, StoreFileError> {
    crate::jsonl::load(path, |rec: StoreRecord| sink.upsert(&rec))
}

/// Follows the compacted registry topic from its beginning on a dedicated thread, applying
/// each record (or tombstone) to `sink`, until stopped.
pub fn follow(
    settings: &KafkaSettings,
    topic: String,
    sink: Arc<dyn StoreSink>,
) -> KafkaResult<crate::kafka::Follower> {
    let codec = Codec::single_object();
    crate::kafka::follow_compacted(
        settings,
        topic,
        crate::kafka::REGISTRY_FOLLOWER_GROUP,
        move |key, payload, offset| {
            match payload {
                None => sink.remove(key),
                Some(bytes) => match codec.decode::<StoreRecord>(bytes) {
                    Ok(rec) => {
                        if let Err(e) = sink.upsert(&rec) {
                            tracing::warn!(store_id = rec.store_id, error = %e, "store record refused");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, offset, "undecodable store record"),
                },
            }
            sink.changed();
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_the_h3_cell_at_the_resolution() {
        let g = grid_of(31.2304, 121.4737, Resolution::Eight).expect("valid");
        assert_eq!(g.len(), 15);
        assert!(g.starts_with("88"), "{g}");
        assert!(grid_of(91.0, 0.0, Resolution::Eight).expect_err("lat").contains("lat"));
        assert!(grid_of(0.0, 181.0, Resolution::Eight).expect_err("lon").contains("lon"));
    }
}
