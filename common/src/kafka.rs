//! Kafka connection settings shared by all stages.
//!
//! Any librdkafka property can be passed through `properties` (SASL and SSL included:
//! `security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, …). Stages
//! set the properties their guarantees depend on (acks, idempotence, isolation) after the
//! pass-through, so configuration cannot weaken them by accident; see each stage's
//! `kafka.rs`.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

/// How to reach Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port…]`. Default: `NEARFIELD_BROKERS`, else
    /// `127.0.0.1:9092`.
    pub brokers: String,
    /// librdkafka properties passed through as is.
    pub properties: BTreeMap<String, String>,
    /// Topic names.
    pub topics: Topics,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: std::env::var("NEARFIELD_BROKERS")
                .ok()
                .filter(|b| !b.trim().is_empty())
                .unwrap_or_else(|| "127.0.0.1:9092".to_string()),
            properties: BTreeMap::new(),
            topics: Topics::default(),
        }
    }
}

/// Properties a stage owns; pass-through may not set them.
const RESERVED: &[&str] = &["bootstrap.servers"];

/// A pass-through property was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kafka.properties.{key}: {reason}")]
pub struct PropertyError {
    /// The property.
    pub key: String,
    /// Why it is refused.
    pub reason: String,
}

impl KafkaSettings {
    /// A client config with the brokers and every pass-through property, checked for
    /// syntax (librdkafka validates values when the client is created).
    pub fn client_config(&self) -> Result<ClientConfig, PropertyError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            if RESERVED.contains(&k.as_str()) {
                return Err(PropertyError {
                    key: k.clone(),
                    reason: "set it with kafka.brokers instead".into(),
                });
            }
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            {
                return Err(PropertyError {
                    key: k.clone(),
                    reason: "not a librdkafka property name".into(),
                });
            }
            c.set(k, v);
        }
        Ok(c)
    }
}

/// Topic names (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub sales: String,
    pub heartbeats: String,
    pub dlq: String,
    pub late: String,
    pub demand: String,
    pub stores: String,
    pub catalog: String,
    /// Plan topics are `<plan_prefix><supplier_id><plan_suffix>`.
    pub plan_prefix: String,
    pub plan_suffix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            sales: "sales.v1".into(),
            heartbeats: "heartbeats.v1".into(),
            dlq: "sales.dlq.v1".into(),
            late: "sales.late.v1".into(),
            demand: "demand.v1".into(),
            stores: "stores.v1".into(),
            catalog: "catalog.v1".into(),
            plan_prefix: "plan.".into(),
            plan_suffix: ".v1".into(),
        }
    }
}

impl Topics {
    /// The plan topic of a supplier.
    pub fn plan(&self, supplier_id: &str) -> String {
        format!("{}{supplier_id}{}", self.plan_prefix, self.plan_suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_properties_reach_the_client_config() {
        let mut s = KafkaSettings { brokers: "b:1".into(), ..KafkaSettings::default() };
        s.properties.insert("security.protocol".into(), "SASL_SSL".into());
        s.properties.insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        let c = s.client_config().expect("valid");
        assert_eq!(c.get("bootstrap.servers"), Some("b:1"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    }

    #[test]
    fn reserved_and_malformed_properties_are_refused_by_name() {
        let mut s = KafkaSettings::default();
        s.properties.insert("bootstrap.servers".into(), "x".into());
        let e = s.client_config().expect_err("reserved");
        assert_eq!(e.key, "bootstrap.servers");
        let mut s = KafkaSettings::default();
        s.properties.insert("acks all".into(), "x".into());
        assert!(
            s.client_config().expect_err("bad").to_string().contains("kafka.properties.acks all")
        );
    }

    #[test]
    fn plan_topic_per_supplier() {
        assert_eq!(Topics::default().plan("dairy-east"), "plan.dairy-east.v1");
    }
}
