//! The body of `POST /v1/heartbeat` and its rules: a device says it is online, how many
//! sales it holds that it has not uploaded yet (`pending_events`), and since when
//! (`last_upload_at`, its last successful upload). Every rejection names the field and
//! the rule, like an event's.

use serde_json::Value;

use crate::config::Limits;
use crate::validate::Rejection;

/// The fields a heartbeat body may carry.
pub const FIELDS: &[&str] = &["sent_at", "pending_events", "last_upload_at"];

/// A heartbeat as the device sent it, after the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatFields {
    /// Device clock when sent (the server clock when the device did not say).
    pub sent_at: i64,
    /// Sales held and not uploaded yet.
    pub pending_events: i32,
    /// The device's last successful upload, when it said.
    pub last_upload_at: Option<i64>,
}

fn whole_ms(obj: &serde_json::Map<String, Value>, field: &str) -> Result<Option<i64>, Rejection> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_i64().map(Some).ok_or_else(|| {
            Rejection::new(
                field,
                if field == "sent_at" { "sent_at.type" } else { "last_upload_at.type" },
                format!("{field} must be a whole number of ms since the Unix epoch"),
            )
        }),
    }
}

/// Reads and checks a heartbeat body received at server time `now` (no body at all is a
/// heartbeat with every field at its default; anything else must be a JSON object).
pub fn parse(body: &[u8], limits: &Limits, now: i64) -> Result<HeartbeatFields, Rejection> {
    if body.is_empty() {
        return Ok(HeartbeatFields { sent_at: now, pending_events: 0, last_upload_at: None });
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::body("body.json", format!("not valid JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(Rejection::body("body.not_object", "a heartbeat is a JSON object"));
    };
    if let Some(key) = crate::json::duplicate_key(body) {
        return Err(Rejection::duplicate_key(&key));
    }
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Rejection::new(
            k,
            "field.unknown",
            format!("unknown field {k:?}; allowed: {}", FIELDS.join(", ")),
        ));
    }
    let skew = limits.max_future_skew_ms;
    let horizon = limits.max_event_age_ms();
    let sent_at = whole_ms(obj, "sent_at")?.unwrap_or(now);
    if sent_at > now.saturating_add(skew) {
        return Err(Rejection::new(
            "sent_at",
            "sent_at.future",
            format!(
                "sent_at is {} ms ahead of the server clock; at most {skew} ms of device clock skew is allowed",
                sent_at.saturating_sub(now)
            ),
        ));
    }
    if sent_at < now.saturating_sub(horizon) {
        return Err(Rejection::new(
            "sent_at",
            "sent_at.too_old",
            format!(
                "sent_at is {} ms in the past, beyond the horizon of {horizon} ms: a heartbeat is about now",
                now.saturating_sub(sent_at)
            ),
        ));
    }
    let pending_events = match obj.get("pending_events") {
        None | Some(Value::Null) => 0,
        Some(x) => {
            x.as_i64().and_then(|n| i32::try_from(n).ok()).filter(|n| *n >= 0).ok_or_else(|| {
                Rejection::new(
                    "pending_events",
                    "pending_events.range",
                    "pending_events must be a whole number within 0..=2147483647",
                )
            })?
        }
    };
    let last_upload_at = whole_ms(obj, "last_upload_at")?;
    if let Some(t) = last_upload_at {
        if t < 0 {
            return Err(Rejection::new(
                "last_upload_at",
                "last_upload_at.range",
                "last_upload_at must not be before the Unix epoch",
            ));
        }
        if t > sent_at {
            return Err(Rejection::new(
                "last_upload_at",
                "last_upload_at.after_sent_at",
                format!(
                    "last_upload_at ({t}) is after sent_at ({sent_at}): the last upload happened before the heartbeat"
                ),
            ));
        }
    }
    Ok(HeartbeatFields { sent_at, pending_events, last_upload_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn rule(body: &str) -> (Option<String>, &'static str, u16) {
        let r = parse(body.as_bytes(), &Limits::default(), NOW).expect_err(body);
        (r.field, r.rule, r.status)
    }

    #[test]
    fn an_empty_body_is_a_heartbeat_about_now() {
        let f = parse(b"", &Limits::default(), NOW).expect("no body is fine");
        assert_eq!(f, HeartbeatFields { sent_at: NOW, pending_events: 0, last_upload_at: None });
        // Some bytes are a body, and a body is a JSON object.
        assert_eq!(rule(" \n"), (None, "body.json", 400));
        let nulls = r#"{"sent_at":null,"pending_events":null,"last_upload_at":null}"#;
        let f = parse(nulls.as_bytes(), &Limits::default(), NOW).expect("null is absent");
        assert_eq!(f, HeartbeatFields { sent_at: NOW, pending_events: 0, last_upload_at: None });
    }

    #[test]
    fn a_backlog_says_since_when() {
        let body = format!(
            r#"{{"sent_at":{NOW},"pending_events":37,"last_upload_at":{}}}"#,
            NOW - 8 * 3_600_000
        );
        let f = parse(body.as_bytes(), &Limits::default(), NOW).expect("valid");
        assert_eq!(f.pending_events, 37);
        assert_eq!(f.last_upload_at, Some(NOW - 8 * 3_600_000));
        let f = parse(br#"{"last_upload_at":null}"#, &Limits::default(), NOW).expect("null");
        assert_eq!(f.last_upload_at, None);
    }

    #[test]
    fn every_rule_names_its_field() {
        let s = |f: &str| Some(f.to_string());
        assert_eq!(rule("{"), (None, "body.json", 400));
        assert_eq!(rule("[1]"), (None, "body.not_object", 400));
        assert_eq!(rule(r#"{"battery":3}"#), (s("battery"), "field.unknown", 422));
        assert_eq!(
            rule(r#"{"pending_events":1,"pending_events":900}"#),
            (s("pending_events"), "body.duplicate_key", 400)
        );
        assert_eq!(rule(r#"{"sent_at":"now"}"#), (s("sent_at"), "sent_at.type", 422));
        assert_eq!(rule(r#"{"sent_at":1.5}"#), (s("sent_at"), "sent_at.type", 422));
        let future = NOW + Limits::default().max_future_skew_ms + 1;
        assert_eq!(
            rule(&format!(r#"{{"sent_at":{future}}}"#)),
            (s("sent_at"), "sent_at.future", 422)
        );
        // Decades away either way.
        assert_eq!(rule(r#"{"sent_at":4102444800000}"#), (s("sent_at"), "sent_at.future", 422));
        assert_eq!(rule(r#"{"sent_at":0}"#), (s("sent_at"), "sent_at.too_old", 422));
        for bad in ["-1", "2147483648", "\"7\"", "1.5"] {
            assert_eq!(
                rule(&format!(r#"{{"pending_events":{bad}}}"#)),
                (s("pending_events"), "pending_events.range", 422),
                "{bad}"
            );
        }
        assert_eq!(
            rule(r#"{"last_upload_at":"yesterday"}"#),
            (s("last_upload_at"), "last_upload_at.type", 422)
        );
        assert_eq!(
            rule(r#"{"last_upload_at":-5}"#),
            (s("last_upload_at"), "last_upload_at.range", 422)
        );
        assert_eq!(
            rule(&format!(r#"{{"sent_at":{NOW},"last_upload_at":{}}}"#, NOW + 1)),
            (s("last_upload_at"), "last_upload_at.after_sent_at", 422)
        );
    }

    #[test]
    fn the_edges_are_inclusive() {
        let l = Limits::default();
        for t in [NOW + l.max_future_skew_ms, NOW - l.max_event_age_ms()] {
            let body = format!(r#"{{"sent_at":{t},"last_upload_at":{t}}}"#);
            assert_eq!(parse(body.as_bytes(), &l, NOW).expect("edge").sent_at, t);
        }
    }
}
