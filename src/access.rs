//! `nearfield access`: principals and ACLs on a secured cluster (SASL/SCRAM with an
//! authorizer), run with an admin's credentials in `kafka.properties`
//! (`NEARFIELD_KAFKA_PROPERTY_*`, as `KAFKA_SECURITY=scram make kafka-up` prints them).

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use nearfield_access::{Admin, Grantee, Names, Role, Scram};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Create supplier ID's principal with a new password (re-keys it when it exists)
    /// and its ACLs: read `plan.<ID>.v1` as group `supplier-<ID>`, nothing else. Prints
    /// its librdkafka properties (`key=value` lines).
    GrantSupplier { id: String },
    /// Remove supplier ID's ACLs and credential.
    RevokeSupplier { id: String },
    /// Create a stage's principal (ingest, aggregate, emit) or the operator's, with only
    /// the ACLs its work needs (see docs/security.md). Prints its librdkafka properties.
    GrantStage { role: String },
    /// Remove a stage's (or the operator's) ACLs and credential.
    RevokeStage { role: String },
}

fn role(name: &str) -> anyhow::Result<Role> {
    Role::parse(name)
        .with_context(|| format!("unknown role {name:?}: one of ingest, aggregate, emit, operator"))
}

fn supplier(id: &str) -> anyhow::Result<Grantee> {
    use nearfield_common::ids;
    ids::check(id, 64).map_err(|_| {
        anyhow::anyhow!("supplier id {id:?}: must be 1 to 64 bytes of {}", ids::RULE)
    })?;
    Ok(Grantee::Supplier(id.to_string()))
}

/// Runs an access command; returns what to print.
pub async fn run(cmd: AccessCommand, cfg: &Config) -> anyhow::Result<String> {
    let names = Names {
        topics: cfg.kafka.topics.clone(),
        aggregate_group: cfg.aggregate.exactly_once.group_id.clone(),
        emit_group: cfg.emit.exactly_once.group_id.clone(),
        late_replay_group: nearfield_aggregator::late::GROUP.to_string(),
        follower_groups: nearfield_common::kafka::FOLLOWER_GROUPS
            .iter()
            .map(|g| g.to_string())
            .collect(),
    };
    let props = &cfg.kafka.properties;
    let protocol = props.get("security.protocol").cloned().unwrap_or_else(|| "PLAINTEXT".into());
    anyhow::ensure!(
        protocol.to_ascii_uppercase().starts_with("SASL"),
        "nearfield access needs the admin's SASL settings (kafka.properties security.protocol, \
         sasl.mechanism, sasl.username, sasl.password; e.g. the NEARFIELD_KAFKA_PROPERTY_* \
         lines `KAFKA_SECURITY=scram make kafka-up` prints), got security.protocol={protocol}"
    );
    let mechanism = match props.get("sasl.mechanism") {
        Some(m) => Scram::from_mechanism(m)
            .with_context(|| format!("sasl.mechanism {m}: principals are SCRAM-SHA-256 or -512"))?,
        None => Scram::Sha512,
    };
    let config = cfg.kafka.client_config()?;
    let brokers = cfg.kafka.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let admin = Admin::new(&config, Duration::from_secs(30))?;
        let grant = |who: Grantee| -> anyhow::Result<String> {
            let creds =
                nearfield_access::grant(&admin, &who, &names, &brokers, &protocol, mechanism)
                    .with_context(|| format!("granting {}", who.user()))?;
            tracing::info!(principal = who.user(), "granted");
            Ok(creds.to_properties())
        };
        let revoke = |who: Grantee| -> anyhow::Result<String> {
            let r = nearfield_access::revoke(&admin, &who, mechanism)
                .with_context(|| format!("revoking {}", who.user()))?;
            tracing::info!(
                principal = who.user(),
                acls = r.acls,
                credential = r.credential,
                "revoked"
            );
            Ok(String::new())
        };
        match cmd {
            AccessCommand::GrantSupplier { id } => grant(supplier(&id)?),
            AccessCommand::RevokeSupplier { id } => revoke(supplier(&id)?),
            AccessCommand::GrantStage { role: r } => grant(Grantee::Role(role(&r)?)),
            AccessCommand::RevokeStage { role: r } => revoke(Grantee::Role(role(&r)?)),
        }
    })
    .await?
}
