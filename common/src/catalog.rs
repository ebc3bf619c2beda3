//! The supplier catalog: sku → supplier, factory, MOQ, batch size, lead time and the
//! warehouses (with the H3 cells they serve) the SKU is delivered to. Loaded from a
//! JSON-lines file of `CatalogRecord`s and kept current from the compacted `catalog.v1`
//! (a tombstone removes a SKU).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use h3o::CellIndex;
use nearfield_schemas::CatalogRecord;

/// One SKU as the emitter uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub sku: String,
    pub category: String,
    pub supplier_id: String,
    pub factory_id: String,
    pub moq: i64,
    pub batch_size: i64,
    pub lead_time_ms: i64,
    /// (warehouse, cells served).
    pub areas: Vec<(String, Vec<CellIndex>)>,
}

impl Item {
    /// The warehouse serving `grid`: the first area with a cell equal to the grid or one of
    /// its parents.
    pub fn warehouse_of(&self, grid: CellIndex) -> Option<&str> {
        self.areas.iter().find_map(|(w, cells)| {
            cells
                .iter()
                .any(|c| {
                    c.resolution() <= grid.resolution() && grid.parent(c.resolution()) == Some(*c)
                })
                .then_some(w.as_str())
        })
    }
}

fn valid_supplier(s: &str) -> bool {
    (1..=48).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks a record; the error names the field and the rule.
pub fn validate(rec: &CatalogRecord) -> Result<Item, String> {
    if crate::ids::check(&rec.sku, 64).is_err() {
        return Err(format!("sku: must be 1..=64 bytes of {}", crate::ids::RULE));
    }
    if !valid_supplier(&rec.supplier_id) {
        return Err("supplier_id: must be 1..=48 characters of [a-z0-9_-]".into());
    }
    if rec.factory_id.is_empty() {
        return Err("factory_id: must not be empty".into());
    }
    if rec.moq < 1 {
        return Err("moq: must be at least 1".into());
    }
    if rec.batch_size < 1 {
        return Err("batch_size: must be at least 1".into());
    }
    if rec.lead_time_hours < 0 {
        return Err("lead_time_hours: must be >= 0".into());
    }
    if rec.service_areas.is_empty() {
        return Err("service_areas: must name at least one warehouse".into());
    }
    let mut areas = Vec::new();
    for (i, a) in rec.service_areas.iter().enumerate() {
        if a.warehouse_id.is_empty() {
            return Err(format!("service_areas[{i}].warehouse_id: must not be empty"));
        }
        let mut cells = Vec::new();
        for (j, c) in a.cells.iter().enumerate() {
            let cell: CellIndex = c.parse().map_err(|_| {
                format!("service_areas[{i}].cells[{j}]: {c:?} is not an H3 cell (lower-case hex)")
            })?;
            cells.push(cell);
        }
        areas.push((a.warehouse_id.clone(), cells));
    }
    Ok(Item {
        sku: rec.sku.clone(),
        category: rec.category.clone(),
        supplier_id: rec.supplier_id.clone(),
        factory_id: rec.factory_id.clone(),
        moq: rec.moq,
        batch_size: rec.batch_size,
        lead_time_ms: i64::from(rec.lead_time_hours) * 3_600_000,
        areas,
    })
}

/// The catalog, shared by the loop and the follower.
#[derive(Debug, Default)]
pub struct Catalog {
    items: RwLock<HashMap<String, Arc<Item>>>,
}

/// A catalog file is unusable (see [`crate::jsonl`]).
pub type CatalogFileError = crate::jsonl::FileError;

impl Catalog {
    /// A catalog of the given items (tests).
    pub fn of(items: impl IntoIterator<Item = Item>) -> Self {
        let c = Catalog::default();
        for it in items {
            c.insert(it);
        }
        c
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Item>>> {
        self.items.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts or replaces an item.
    pub fn insert(&self, item: Item) {
        self.write().insert(item.sku.clone(), Arc::new(item));
    }

    /// Inserts or replaces a record after validating it.
    pub fn upsert(&self, rec: &CatalogRecord) -> Result<(), String> {
        self.insert(validate(rec)?);
        Ok(())
    }

    /// Removes a SKU.
    pub fn remove(&self, sku: &str) {
        self.write().remove(sku);
    }

    /// The item of a SKU.
    pub fn get(&self, sku: &str) -> Option<Arc<Item>> {
        self.items.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(sku).cloned()
    }

    /// Every supplier (for creating plan topics).
    pub fn suppliers(&self) -> BTreeSet<String> {
        self.items
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|i| i.supplier_id.clone())
            .collect()
    }

    /// Every item (a snapshot).
    pub fn items(&self) -> Vec<Arc<Item>> {
        self.items
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Number of SKUs.
    pub fn len(&self) -> usize {
        self.items.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads a JSON-lines file of `CatalogRecord`s; blank lines and `#` comments are
    /// skipped. Returns the number of SKUs loaded.
    pub fn load_file(&self, path: &Path) -> Result<usize, CatalogFileError> {
        crate::jsonl::load(path, |rec: CatalogRecord| self.upsert(&rec))
    }
}

/// Follows the compacted `catalog.v1` from its beginning on a dedicated thread, applying
/// each record (a tombstone removes its SKU) to `catalog`, until stopped; a record that
/// does not decode or breaks a rule goes to `refused(key, offset, error)`.
pub fn follow(
    settings: &crate::kafka::KafkaSettings,
    catalog: Arc<Catalog>,
    refused: impl Fn(&str, i64, &str) + Send + 'static,
) -> rdkafka::error::KafkaResult<crate::kafka::Follower> {
    let codec = nearfield_schemas::Codec::single_object();
    crate::kafka::follow_compacted(
        settings,
        settings.topics.catalog.clone(),
        crate::kafka::CATALOG_FOLLOWER_GROUP,
        move |key, payload, offset| match payload {
            None => catalog.remove(key),
            Some(bytes) => {
                let applied = codec
                    .decode::<CatalogRecord>(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|rec| catalog.upsert(&rec));
                if let Err(error) = applied {
                    refused(key, offset, &error);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nearfield_schemas::ServiceArea;

    fn rec() -> CatalogRecord {
        CatalogRecord {
            sku: "SKU-1".into(),
            name: "Milk".into(),
            category: "dairy".into(),
            supplier_id: "bright-dairy".into(),
            factory_id: "f1".into(),
            moq: 100,
            batch_size: 24,
            lead_time_hours: 24,
            service_areas: vec![ServiceArea {
                warehouse_id: "wh-east".into(),
                cells: vec!["85309a63fffffff".into()],
            }],
            updated_at: 0,
        }
    }

    #[test]
    fn records_are_validated_by_field() {
        let item = validate(&rec()).expect("valid");
        assert_eq!(item.lead_time_ms, 86_400_000);
        let mut r = rec();
        r.supplier_id = "Bright Dairy".into();
        assert!(validate(&r).expect_err("supplier").starts_with("supplier_id:"));
        let mut r = rec();
        r.batch_size = 0;
        assert!(validate(&r).expect_err("batch").starts_with("batch_size:"));
        let mut r = rec();
        r.service_areas[0].cells[0] = "zz".into();
        assert!(validate(&r).expect_err("cell").starts_with("service_areas[0].cells[0]:"));
    }

    #[test]
    fn a_grid_is_served_by_the_area_containing_it() {
        let item = validate(&rec()).expect("valid");
        let area: CellIndex = "85309a63fffffff".parse().expect("cell");
        let child = area.center_child(h3o::Resolution::Eight).expect("child");
        assert_eq!(item.warehouse_of(child), Some("wh-east"));
        let elsewhere: CellIndex = "8828308281fffff".parse().expect("cell");
        assert_eq!(item.warehouse_of(elsewhere), None);
    }
}
