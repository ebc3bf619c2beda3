//! Parsers of request bodies into events. Each parser turns untrusted bytes into a list of
//! per-event results, never panics, and keeps each event's raw bytes so a rejected event
//! can go to the dead-letter topic as it came.
//!
//! Batch media types:
//! - `application/json`: a JSON array of event objects;
//! - `application/x-ndjson`: one event object per line;
//! - `application/vnd.nearfield.avro-batch`: repeated `[u32 big-endian length][message]`,
//!   each message a single-object encoded `SaleEvent` (its `store_id`, `device_id`,
//!   `grid_id` and `received_at` are set by the server from the signature and registry).

use bytes::Bytes;
use nearfield_schemas::{Codec, SaleEvent};

use crate::validate::{EventFields, Rejection, fields_from_json_bytes};

/// Media type of Avro batches.
pub const AVRO_BATCH: &str = "application/vnd.nearfield.avro-batch";

/// One event of a body: its fields, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The event's own bytes (a slice of the body, for the dead-letter record).
    pub raw: Bytes,
    /// Its event_id when readable.
    pub event_id: Option<String>,
    pub fields: Result<EventFields, Rejection>,
}

/// The body as a whole is unusable (400/413/415).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub status: u16,
    pub rejection: Rejection,
}

fn body_error(status: u16, rule: &'static str, message: impl Into<String>) -> BodyError {
    BodyError { status, rejection: Rejection::body(rule, message) }
}

/// Body kinds, from the Content-Type header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    AvroBatch,
}

impl Format {
    /// The format of a Content-Type (parameters ignored); `None` when unsupported.
    pub fn from_content_type(ct: Option<&str>) -> Option<Format> {
        let media = ct
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json" | "" => Some(Format::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Format::Ndjson)
            }
            AVRO_BATCH => Some(Format::AvroBatch),
            _ => None,
        }
    }

    /// Media type for dead-letter records.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::AvroBatch => "application/vnd.nearfield.avro",
        }
    }
}

fn from_json(raw: Bytes) -> Parsed {
    let (event_id, fields) = fields_from_json_bytes(&raw);
    Parsed { raw, event_id, fields }
}

/// One JSON event object (`POST /v1/events`).
pub fn parse_single(body: &Bytes) -> Result<Parsed, BodyError> {
    let parsed = from_json(body.clone());
    match &parsed.fields {
        Err(r) if r.rule == "body.json" => Err(BodyError { status: 400, rejection: r.clone() }),
        _ => Ok(parsed),
    }
}

/// A batch body (`POST /v1/events:batch`), at most `max_events` events.
pub fn parse_batch(
    format: Format,
    body: &Bytes,
    max_events: usize,
) -> Result<Vec<Parsed>, BodyError> {
    let too_many = |n: usize| {
        body_error(
            413,
            "batch.size",
            format!("a batch holds at most {max_events} events, got {n} or more"),
        )
    };
    let out = match format {
        Format::Json => {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(body).map_err(|e| {
                    body_error(
                        400,
                        "body.json",
                        format!("a batch must be a JSON array of events: {e}"),
                    )
                })?;
            if items.len() > max_events {
                return Err(too_many(items.len()));
            }
            // Each item is a slice of the body: no copy until a record is encoded.
            items.into_iter().map(|raw| from_json(body.slice_ref(raw.get().as_bytes()))).collect()
        }
        Format::Ndjson => {
            let mut out = Vec::new();
            for line in body.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if out.len() == max_events {
                    return Err(too_many(max_events + 1));
                }
                out.push(from_json(body.slice_ref(line)));
            }
            out
        }
        Format::AvroBatch => parse_avro_batch(body, max_events)?,
    };
    if out.is_empty() {
        return Err(body_error(400, "batch.empty", "a batch must hold at least one event"));
    }
    Ok(out)
}

fn parse_avro_batch(whole: &Bytes, max_events: usize) -> Result<Vec<Parsed>, BodyError> {
    let codec = Codec::single_object();
    let mut body: &[u8] = whole;
    let mut out = Vec::new();
    while !body.is_empty() {
        if out.len() == max_events {
            return Err(body_error(
                413,
                "batch.size",
                format!("a batch holds at most {max_events} events"),
            ));
        }
        let Some((len, rest)) = body.split_first_chunk::<4>() else {
            return Err(body_error(400, "body.avro_framing", "truncated length prefix"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err(body_error(
                400,
                "body.avro_framing",
                format!("event {} claims {len} bytes but only {} remain", out.len(), rest.len()),
            ));
        }
        let (msg, tail) = rest.split_at(len);
        body = tail;
        out.push(match codec.decode::<SaleEvent>(msg) {
            Ok(e) => Parsed {
                raw: whole.slice_ref(msg),
                event_id: Some(e.event_id.clone()),
                fields: Ok(EventFields {
                    event_id: e.event_id,
                    store_id: Some(e.store_id).filter(|s| !s.is_empty()),
                    device_id: Some(e.device_id).filter(|s| !s.is_empty()),
                    sku: e.sku,
                    kind: e.kind.as_str().to_string(),
                    quantity: i64::from(e.quantity),
                    unit_price_minor: e.unit_price_minor,
                    currency: e.currency,
                    occurred_at: e.occurred_at,
                }),
            },
            Err(e) => Parsed {
                raw: whole.slice_ref(msg),
                event_id: None,
                fields: Err(Rejection::body(e.reason(), e.to_string())),
            },
        });
    }
    Ok(out)
}

/// Frames events as an Avro batch body (for devices and the simulator).
pub fn encode_avro_batch(events: &[SaleEvent]) -> Vec<u8> {
    let codec = Codec::single_object();
    let mut out = Vec::with_capacity(events.len() * 96);
    let mut msg = Vec::with_capacity(128);
    for e in events {
        msg.clear();
        if codec.encode_into(e, &mut msg).is_ok() {
            out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            out.extend_from_slice(&msg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nearfield_schemas::SaleKind;

    fn b(x: impl AsRef<[u8]>) -> Bytes {
        Bytes::copy_from_slice(x.as_ref())
    }

    const EV: &str = r#"{"event_id":"e1","sku":"A","kind":"SALE","quantity":1,"unit_price_minor":5,"currency":"CNY","occurred_at":1}"#;

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type(None), Some(Format::Json));
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type(Some("application/x-ndjson")), Some(Format::Ndjson));
        assert_eq!(Format::from_content_type(Some(AVRO_BATCH)), Some(Format::AvroBatch));
        assert_eq!(Format::from_content_type(Some("text/csv")), None);
    }

    #[test]
    fn json_array_keeps_good_and_bad_events_apart() {
        let body = Bytes::from(format!(r#"[{EV}, {{"event_id":"e2"}}, 7]"#));
        let out = parse_batch(Format::Json, &body, 10).expect("parses");
        assert_eq!(out.len(), 3);
        assert!(out[0].fields.is_ok());
        assert_eq!(out[0].raw, EV.as_bytes());
        assert_eq!(out[1].event_id.as_deref(), Some("e2"));
        assert_eq!(out[1].fields.as_ref().expect_err("missing").rule, "field.required");
        assert_eq!(out[2].fields.as_ref().expect_err("not object").rule, "body.not_object");
    }

    #[test]
    fn ndjson_reports_each_broken_line() {
        let body = Bytes::from(format!("{EV}\r\n\nnot json\n{EV}\n"));
        let out = parse_batch(Format::Ndjson, &body, 10).expect("parses");
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].fields.as_ref().expect_err("bad").rule, "body.json");
        assert_eq!(out[1].raw, &b"not json"[..]);
    }

    #[test]
    fn batch_limits() {
        let body = format!("[{EV},{EV},{EV}]");
        assert_eq!(
            parse_batch(Format::Json, &b(body.as_bytes()), 2).expect_err("too many").status,
            413
        );
        let nd = format!("{EV}\n{EV}\n{EV}\n");
        assert_eq!(
            parse_batch(Format::Ndjson, &b(nd.as_bytes()), 2).expect_err("too many").status,
            413
        );
        assert_eq!(
            parse_batch(Format::Json, &b(b"[]"), 2).expect_err("empty").rejection.rule,
            "batch.empty"
        );
        assert_eq!(parse_batch(Format::Json, &b(b"{"), 2).expect_err("bad").status, 400);
    }

    #[test]
    fn avro_batches_round_trip_and_bad_frames_are_errors() {
        let e = SaleEvent {
            event_id: "a1".into(),
            store_id: String::new(),
            device_id: String::new(),
            grid_id: String::new(),
            sku: "S".into(),
            kind: SaleKind::Return,
            quantity: 3,
            unit_price_minor: 9,
            currency: "CNY".into(),
            occurred_at: 5,
            received_at: 0,
        };
        let body = Bytes::from(encode_avro_batch(&[e.clone(), e.clone()]));
        let out = parse_batch(Format::AvroBatch, &b(&body), 10).expect("parses");
        assert_eq!(out.len(), 2);
        let f = out[0].fields.as_ref().expect("ok");
        assert_eq!((f.kind.as_str(), f.quantity, f.store_id.as_ref()), ("RETURN", 3, None));
        assert_eq!(
            parse_batch(Format::AvroBatch, &b(&body[..body.len() - 1]), 10)
                .expect_err("cut")
                .status,
            400
        );
        let mut junk = vec![0, 0, 0, 3];
        junk.extend_from_slice(b"xyz");
        let out = parse_batch(Format::AvroBatch, &b(&junk), 10).expect("framing ok");
        assert_eq!(out[0].fields.as_ref().expect_err("bad").rule, "decode.framing");
    }
}
