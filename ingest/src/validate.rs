//! Validation of one sale event against SPEC §5's rules. Every rejection names the field
//! and the rule (`quantity.range`, `occurred_at.future`, …) and says what was expected.

use serde::Serialize;
use serde_json::Value;

use nearfield_schemas::{SaleEvent, SaleKind};

use nearfield_common::catalog::Catalog;

use crate::config::{Limits, is_currency_code};
use crate::registry::Principal;

/// Why an event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The field the rule applies to (`None` for the body as a whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Machine-readable rule, `<field>.<rule>`.
    pub rule: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// HTTP status for a single-event request: 400 malformed, 403 not your store,
    /// 422 a rule broken.
    #[serde(skip)]
    pub status: u16,
}

impl Rejection {
    pub(crate) fn new(field: &str, rule: &'static str, message: impl Into<String>) -> Self {
        Rejection { field: Some(field.to_string()), rule, message: message.into(), status: 422 }
    }
    pub(crate) fn body(rule: &'static str, message: impl Into<String>) -> Self {
        Rejection { field: None, rule, message: message.into(), status: 400 }
    }
    /// A JSON object names `key` twice (400: the body is ambiguous, not a broken rule).
    pub(crate) fn duplicate_key(key: &str) -> Self {
        Rejection {
            status: 400,
            ..Rejection::new(
                key,
                "body.duplicate_key",
                format!("{key:?} appears more than once in one object; each key at most once"),
            )
        }
    }
    fn forbidden(field: &str, rule: &'static str, message: impl Into<String>) -> Self {
        Rejection { status: 403, ..Rejection::new(field, rule, message) }
    }
}

/// An event as a device sent it, before the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFields {
    pub event_id: String,
    pub store_id: Option<String>,
    pub device_id: Option<String>,
    pub sku: String,
    pub kind: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub currency: String,
    pub occurred_at: i64,
}

const FIELDS: &[&str] = &[
    "event_id",
    "store_id",
    "device_id",
    "sku",
    "kind",
    "quantity",
    "unit_price_minor",
    "currency",
    "occurred_at",
];

/// Reads the fields of a JSON event object; a missing, mistyped or unknown field is a
/// rejection that names it.
pub fn fields_from_json(v: &Value) -> Result<EventFields, Rejection> {
    let Value::Object(map) = v else {
        return Err(Rejection::body("body.not_object", "an event must be a JSON object"));
    };
    if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Rejection::new(
            k,
            "field.unknown",
            format!("unknown field {k:?}; allowed: {}", FIELDS.join(", ")),
        ));
    }
    let string = |name: &'static str| -> Result<Option<String>, Rejection> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Rejection::new(name, "field.type", format!("{name} must be a string"))),
        }
    };
    let required_string = |name: &'static str| -> Result<String, Rejection> {
        string(name)?
            .ok_or_else(|| Rejection::new(name, "field.required", format!("{name} is required")))
    };
    let integer = |name: &'static str| -> Result<i64, Rejection> {
        match map.get(name) {
            None | Some(Value::Null) => {
                Err(Rejection::new(name, "field.required", format!("{name} is required")))
            }
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                Rejection::new(
                    name,
                    "field.type",
                    format!("{name} must be a whole number, got {n}"),
                )
            }),
            Some(_) => {
                Err(Rejection::new(name, "field.type", format!("{name} must be a whole number")))
            }
        }
    };
    Ok(EventFields {
        event_id: required_string("event_id")?,
        store_id: string("store_id")?,
        device_id: string("device_id")?,
        sku: required_string("sku")?,
        kind: required_string("kind")?,
        quantity: integer("quantity")?,
        unit_price_minor: integer("unit_price_minor")?,
        currency: required_string("currency")?,
        occurred_at: integer("occurred_at")?,
    })
}

/// The shape of a well-formed event, read without building a JSON tree (the fast path).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed<'a> {
    #[serde(borrow)]
    event_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    store_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    device_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    sku: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    quantity: i64,
    unit_price_minor: i64,
    #[serde(borrow)]
    currency: std::borrow::Cow<'a, str>,
    occurred_at: i64,
}

/// Reads one JSON event from its bytes: the typed fast path first; if the bytes do not
/// have that shape, a JSON tree to name what is wrong. Returns the event_id when readable.
pub fn fields_from_json_bytes(raw: &[u8]) -> (Option<String>, Result<EventFields, Rejection>) {
    if let Ok(t) = serde_json::from_slice::<Typed<'_>>(raw) {
        let fields = EventFields {
            event_id: t.event_id.into_owned(),
            store_id: t.store_id.map(std::borrow::Cow::into_owned),
            device_id: t.device_id.map(std::borrow::Cow::into_owned),
            sku: t.sku.into_owned(),
            kind: t.kind.into_owned(),
            quantity: t.quantity,
            unit_price_minor: t.unit_price_minor,
            currency: t.currency.into_owned(),
            occurred_at: t.occurred_at,
        };
        return (Some(fields.event_id.clone()), Ok(fields));
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(v) => match crate::json::duplicate_key(raw) {
            Some(key) => (event_id_of(&v), Err(Rejection::duplicate_key(&key))),
            None => (event_id_of(&v), fields_from_json(&v)),
        },
        Err(e) => (None, Err(Rejection::body("body.json", format!("not valid JSON: {e}")))),
    }
}

/// The event_id of a JSON event, if it has a readable one (for per-event answers).
pub fn event_id_of(v: &Value) -> Option<String> {
    v.get("event_id").and_then(Value::as_str).map(str::to_string)
}

/// The identifier rule (`nearfield_common::ids`) for `field`; `rules` names the (length,
/// charset) rules it reports.
fn check_id(
    field: &str,
    value: &str,
    max: usize,
    rules: (&'static str, &'static str),
) -> Result<(), Rejection> {
    use nearfield_common::ids::{self, IdError};
    match ids::check(value, max) {
        Ok(()) => Ok(()),
        Err(IdError::Length { bytes, max }) => Err(Rejection::new(
            field,
            rules.0,
            format!("{field} must be 1..={max} bytes, got {bytes}"),
        )),
        Err(IdError::Charset { at }) => Err(Rejection::new(
            field,
            rules.1,
            format!("{field} may contain only {} (byte {at} is not one)", ids::RULE),
        )),
    }
}

/// What an event is checked against besides its own fields.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub limits: &'a Limits,
    /// Accepted currencies (empty: any ISO 4217 code).
    pub currencies: &'a [String],
    /// The catalog, when one is configured: its SKUs are the only ones accepted.
    pub catalog: Option<&'a Catalog>,
}

/// Applies every rule; on success the `SaleEvent` to publish.
pub fn validate(
    f: EventFields,
    who: &Principal,
    rules: Rules<'_>,
    now_ms: i64,
) -> Result<SaleEvent, Rejection> {
    let Rules { limits, currencies, catalog } = rules;
    check_id("event_id", &f.event_id, limits.max_id_len, ("event_id.length", "event_id.charset"))?;
    if let Some(s) = &f.store_id
        && s != &who.store_id
    {
        return Err(Rejection::forbidden(
            "store_id",
            "store_id.forbidden",
            format!("device may only write for its own store {:?}, not {s:?}", who.store_id),
        ));
    }
    if let Some(d) = &f.device_id
        && d != &who.device_id
    {
        return Err(Rejection::forbidden(
            "device_id",
            "device_id.forbidden",
            format!("device_id must be the signing device {:?}, not {d:?}", who.device_id),
        ));
    }
    check_id("sku", &f.sku, limits.max_id_len, ("sku.length", "sku.charset"))?;
    if let Some(c) = catalog
        && c.get(&f.sku).is_none()
    {
        return Err(Rejection::new(
            "sku",
            "sku.unknown",
            format!(
                "sku {:?} is not in the catalog; an event names a SKU a supplier supplies",
                f.sku
            ),
        ));
    }
    let kind = match f.kind.to_ascii_uppercase().as_str() {
        "SALE" => SaleKind::Sale,
        "RETURN" => SaleKind::Return,
        "PREORDER" => SaleKind::Preorder,
        _ => {
            return Err(Rejection::new(
                "kind",
                "kind.enum",
                format!("kind must be SALE, RETURN or PREORDER, got {:?}", f.kind),
            ));
        }
    };
    if !(1..=i64::from(limits.max_quantity)).contains(&f.quantity) {
        return Err(Rejection::new(
            "quantity",
            "quantity.range",
            format!("quantity must be between 1 and {}, got {}", limits.max_quantity, f.quantity),
        ));
    }
    if !(0..=limits.max_unit_price_minor).contains(&f.unit_price_minor) {
        return Err(Rejection::new(
            "unit_price_minor",
            "unit_price_minor.range",
            format!(
                "unit_price_minor must be between 0 and {}, got {}",
                limits.max_unit_price_minor, f.unit_price_minor
            ),
        ));
    }
    if !is_currency_code(&f.currency) {
        return Err(Rejection::new(
            "currency",
            "currency.format",
            format!(
                "currency must be an ISO 4217 code of three upper-case letters, got {:?}",
                f.currency
            ),
        ));
    }
    if !currencies.is_empty() && !currencies.contains(&f.currency) {
        return Err(Rejection::new(
            "currency",
            "currency.allowed",
            format!(
                "currency {:?} is not accepted here; accepted: {}",
                f.currency,
                currencies.join(", ")
            ),
        ));
    }
    if f.occurred_at > now_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(Rejection::new(
            "occurred_at",
            "occurred_at.future",
            format!(
                "occurred_at is {} ms ahead of the server clock; at most {} ms of device clock skew is allowed",
                f.occurred_at - now_ms,
                limits.max_future_skew_ms
            ),
        ));
    }
    if f.occurred_at < now_ms.saturating_sub(limits.max_event_age_ms()) {
        return Err(Rejection::new(
            "occurred_at",
            "occurred_at.too_old",
            format!(
                "occurred_at is {} ms in the past, beyond the horizon of {} ms (the aggregator's widest window, its grace and allowed lateness): no window would count it",
                now_ms.saturating_sub(f.occurred_at),
                limits.max_event_age_ms()
            ),
        ));
    }
    let quantity = i32::try_from(f.quantity).unwrap_or(i32::MAX); // bounded above
    Ok(SaleEvent {
        event_id: f.event_id,
        store_id: who.store_id.clone(),
        device_id: who.device_id.clone(),
        grid_id: who.grid_id.clone(),
        sku: f.sku,
        kind,
        quantity,
        unit_price_minor: f.unit_price_minor,
        currency: f.currency,
        occurred_at: f.occurred_at,
        received_at: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_764_000_000_000;

    fn who() -> Principal {
        Principal {
            store_id: "s1".into(),
            device_id: "pos-1".into(),
            grid_id: "8831aa5551fffff".into(),
        }
    }

    fn good() -> Value {
        json!({"event_id": "e-1", "sku": "SKU-1", "kind": "SALE", "quantity": 2,
               "unit_price_minor": 650, "currency": "CNY", "occurred_at": NOW - 1000})
    }

    fn check(v: Value) -> Result<SaleEvent, Rejection> {
        let rules = Rules { limits: &Limits::default(), currencies: &[], catalog: None };
        validate(fields_from_json(&v)?, &who(), rules, NOW)
    }

    fn rule_of(
        mutate: impl FnOnce(&mut serde_json::Map<String, Value>),
    ) -> (Option<String>, &'static str, u16) {
        let mut v = good();
        mutate(v.as_object_mut().expect("object"));
        let r = check(v).expect_err("must be rejected");
        (r.field, r.rule, r.status)
    }

    #[test]
    fn a_good_event_takes_store_device_grid_and_clock_from_the_server() {
        let e = check(good()).expect("valid");
        assert_eq!(
            (e.store_id.as_str(), e.device_id.as_str(), e.grid_id.as_str()),
            ("s1", "pos-1", "8831aa5551fffff")
        );
        assert_eq!(e.received_at, NOW);
        assert_eq!(e.kind, SaleKind::Sale);
        let mut v = good();
        v["kind"] = json!("preorder");
        v["store_id"] = json!("s1");
        v["device_id"] = json!("pos-1");
        assert_eq!(check(v).expect("valid").kind, SaleKind::Preorder);
    }

    #[test]
    fn every_rule_names_its_field() {
        let f = |s: &str| Some(s.to_string());
        assert_eq!(
            rule_of(|m| {
                m.remove("sku");
            }),
            (f("sku"), "field.required", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("quantity".into(), json!("2"));
            }),
            (f("quantity"), "field.type", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("quantity".into(), json!(1.5));
            }),
            (f("quantity"), "field.type", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("colour".into(), json!("red"));
            }),
            (f("colour"), "field.unknown", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("event_id".into(), json!(""));
            }),
            (f("event_id"), "event_id.length", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("event_id".into(), json!("x".repeat(65)));
            }),
            (f("event_id"), "event_id.length", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("event_id".into(), json!("a b"));
            }),
            (f("event_id"), "event_id.charset", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("sku".into(), json!("a\u{0}b"));
            }),
            (f("sku"), "sku.charset", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("sku".into(), json!(" a"));
            }),
            (f("sku"), "sku.charset", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("kind".into(), json!("GIFT"));
            }),
            (f("kind"), "kind.enum", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("quantity".into(), json!(0));
            }),
            (f("quantity"), "quantity.range", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("quantity".into(), json!(10_001));
            }),
            (f("quantity"), "quantity.range", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("unit_price_minor".into(), json!(-1));
            }),
            (f("unit_price_minor"), "unit_price_minor.range", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("currency".into(), json!("cny"));
            }),
            (f("currency"), "currency.format", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("occurred_at".into(), json!(NOW + 301_000));
            }),
            (f("occurred_at"), "occurred_at.future", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("occurred_at".into(), json!(NOW - 8 * 86_400_000));
            }),
            (f("occurred_at"), "occurred_at.too_old", 422)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("store_id".into(), json!("s2"));
            }),
            (f("store_id"), "store_id.forbidden", 403)
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("device_id".into(), json!("pos-9"));
            }),
            (f("device_id"), "device_id.forbidden", 403)
        );
    }

    #[test]
    fn skew_and_horizon_edges_are_inclusive() {
        let mut v = good();
        v["occurred_at"] = json!(NOW + 300_000);
        assert!(check(v).is_ok());
        let horizon = crate::config::DEFAULT_MAX_EVENT_AGE_MS;
        let mut v = good();
        v["occurred_at"] = json!(NOW - horizon);
        assert!(check(v).is_ok());
    }

    #[test]
    fn an_event_older_than_the_aggregators_horizon_is_refused_naming_it() {
        let horizon = crate::config::DEFAULT_MAX_EVENT_AGE_MS;
        let mut v = good();
        v["occurred_at"] = json!(NOW - horizon - 1);
        let r = check(v).expect_err("beyond the horizon");
        assert_eq!(
            (r.field.as_deref(), r.rule, r.status),
            (Some("occurred_at"), "occurred_at.too_old", 422)
        );
        assert!(r.message.contains(&format!("horizon of {horizon} ms")), "{}", r.message);
        // A deployment's own horizon (derived from its [aggregate] settings) is the rule.
        let limits = Limits { max_event_age_ms: Some(3_600_000), ..Limits::default() };
        let mut v = good();
        v["occurred_at"] = json!(NOW - 3_600_001);
        let f = fields_from_json(&v).expect("fields");
        let rules = Rules { limits: &limits, currencies: &[], catalog: None };
        let r = validate(f, &who(), rules, NOW).expect_err("beyond a 1 h horizon");
        assert_eq!(r.rule, "occurred_at.too_old");
    }

    #[test]
    fn allowed_currencies_are_enforced() {
        let f = fields_from_json(&good()).expect("fields");
        let eur = ["EUR".to_string()];
        let rules = Rules { limits: &Limits::default(), currencies: &eur, catalog: None };
        let r = validate(f, &who(), rules, NOW).expect_err("not allowed");
        assert_eq!(r.rule, "currency.allowed");
    }

    #[test]
    fn the_fast_path_and_the_diagnosing_path_agree() {
        let good = good();
        let (id, fast) = fields_from_json_bytes(good.to_string().as_bytes());
        assert_eq!(id.as_deref(), Some("e-1"));
        assert_eq!(fast.expect("valid"), fields_from_json(&good).expect("valid"));
        let mut with_null = good.clone();
        with_null["store_id"] = Value::Null;
        assert!(fields_from_json_bytes(with_null.to_string().as_bytes()).1.is_ok());
        let mut bad = good;
        bad["quantity"] = json!("2");
        let (id, slow) = fields_from_json_bytes(bad.to_string().as_bytes());
        assert_eq!(id.as_deref(), Some("e-1"));
        assert_eq!(slow.expect_err("mistyped").rule, "field.type");
        assert_eq!(fields_from_json_bytes(b"{oops").1.expect_err("syntax").rule, "body.json");
    }

    #[test]
    fn with_a_catalog_only_its_skus_are_accepted() {
        let catalog = Catalog::default();
        catalog
            .upsert(&nearfield_schemas::CatalogRecord {
                sku: "SKU-1".into(),
                name: "Milk".into(),
                category: "dairy".into(),
                supplier_id: "dairy-co".into(),
                factory_id: "f1".into(),
                moq: 1,
                batch_size: 1,
                lead_time_hours: 0,
                service_areas: vec![nearfield_schemas::ServiceArea {
                    warehouse_id: "wh".into(),
                    cells: vec!["85309827fffffff".into()],
                }],
                updated_at: 0,
            })
            .expect("valid record");
        let rules = Rules { limits: &Limits::default(), currencies: &[], catalog: Some(&catalog) };
        let mut v = good();
        v["sku"] = json!("SKU-1");
        assert!(validate(fields_from_json(&v).expect("fields"), &who(), rules, NOW).is_ok());
        v["sku"] = json!("SKU-NOBODY-SUPPLIES");
        let r = validate(fields_from_json(&v).expect("fields"), &who(), rules, NOW)
            .expect_err("unknown SKU");
        assert_eq!((r.field.as_deref(), r.rule, r.status), (Some("sku"), "sku.unknown", 422));
        assert!(r.message.contains("SKU-NOBODY-SUPPLIES"), "{}", r.message);
    }

    #[test]
    fn a_key_named_twice_is_a_malformed_body_naming_it() {
        let raw = br#"{"event_id":"e1","sku":"SKU-1","kind":"SALE","quantity":1,"quantity":900,
            "unit_price_minor":650,"currency":"CNY","occurred_at":1764000000000}"#;
        let (id, r) = fields_from_json_bytes(raw);
        let r = r.expect_err("ambiguous");
        assert_eq!(
            (r.field.as_deref(), r.rule, r.status),
            (Some("quantity"), "body.duplicate_key", 400)
        );
        assert_eq!(id.as_deref(), Some("e1"), "the event is still named in a batch answer");
    }

    #[test]
    fn identifiers_that_render_unlike_what_they_are_are_refused() {
        for (sku, rule) in [
            ("SKU\u{202e}1LK", "sku.charset"), // right-to-left override
            ("SKU\u{200b}1", "sku.charset"),   // zero-width space
            ("SKU-\u{1f95b}", "sku.charset"),  // a 4-byte character
            ("Ｓ", "sku.charset"),             // full-width S
            (" SKU-1", "sku.charset"),
        ] {
            assert_eq!(
                rule_of(|m| {
                    m.insert("sku".into(), json!(sku));
                })
                .1,
                rule,
                "{sku:?}"
            );
        }
        // Length counts bytes.
        let long = "A".repeat(Limits::default().max_id_len + 1);
        assert_eq!(
            rule_of(|m| {
                m.insert("sku".into(), json!(long));
            })
            .1,
            "sku.length"
        );
        assert_eq!(
            rule_of(|m| {
                m.insert("event_id".into(), json!("e\u{202e}1"));
            })
            .1,
            "event_id.charset"
        );
    }

    #[test]
    fn non_objects_are_malformed_bodies() {
        let r = fields_from_json(&json!([1])).expect_err("array");
        assert_eq!((r.rule, r.status), ("body.not_object", 400));
    }
}
