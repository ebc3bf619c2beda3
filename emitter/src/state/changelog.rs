//! The emitter's changelog: one JSON record per SKU (`s/<sku>`) and one for the
//! partition's clock (`m`), written at every flush for what changed, read back on restore.

use super::PartitionState;
use super::model::Meta;

/// A changelog record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog key {0:?} is not s/<sku> or m")]
    Key(String),
    #[error("changelog value: {0}")]
    Value(#[from] serde_json::Error),
}

pub(super) const SKU_PREFIX: &[u8] = b"s/";
pub(super) const META_KEY: &[u8] = b"m";

impl PartitionState {
    /// Applies one changelog record while restoring.
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        if key == META_KEY {
            if let Some(v) = value {
                let m: Meta = serde_json::from_slice(v)?;
                self.watermark = m.watermark;
                self.completed = m.completed;
            }
            return Ok(());
        }
        let Some(id) = key.strip_prefix(SKU_PREFIX) else {
            return Err(RestoreError::Key(String::from_utf8_lossy(key).into_owned()));
        };
        let id = String::from_utf8_lossy(id).into_owned();
        match value {
            Some(v) => {
                self.skus.insert(id, serde_json::from_slice(v)?);
            }
            None => {
                self.skus.remove(&id);
            }
        }
        Ok(())
    }

    /// The restore is complete at wall-clock `now` (idleness counts from here).
    pub fn restored(&mut self, now: i64) {
        if self.watermark != i64::MIN {
            self.last_input_wall = now;
        }
    }
}
