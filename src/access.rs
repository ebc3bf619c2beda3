//! `nearfield access`: principals and ACLs on a secured cluster (SASL/SCRAM with an
//! authorizer), run with an admin's credentials in `kafka.properties`
//! (`NEARFIELD_KAFKA_PROPERTY_*`, as `KAFKA_SECURITY=scram make kafka-up` prints them).

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use nearfield_access::{Admin, Grantee, Names, Repartition, Role, Scram};

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
    GrantStage {
        role: String,
        /// Only add the ACLs this configuration's names need (a second topic set and
        /// groups, docs/SCALING.md § Growing); the password is left as it is, so the
        /// stages running with it go on. Prints nothing.
        #[arg(long)]
        keep_password: bool,
    },
    /// Remove a stage's (or the operator's) ACLs and credential.
    RevokeStage {
        role: String,
        /// Only remove the ACLs of the topic set and groups this older configuration
        /// names that the current one (`--config`) does not need: the v1 names once a
        /// grown deployment runs on v2 (docs/SCALING.md § Growing). The password and
        /// every right the current configuration needs stay. FILE is read alone: the
        /// environment's `NEARFIELD_*` variables are the current configuration's.
        /// Prints nothing.
        #[arg(long, value_name = "FILE")]
        retired: Option<std::path::PathBuf>,
    },
    /// Create the principal of a copy (`nearfield repartition`) with a new password:
    /// read FROM and its configs, write TO, as the copy's group and transactional ids,
    /// nothing else. Prints its librdkafka properties.
    GrantRepartition {
        /// The topic copied (overrides repartition.from).
        #[arg(long)]
        from: Option<String>,
        /// The topic written (overrides repartition.to).
        #[arg(long)]
        to: Option<String>,
    },
    /// Remove the ACLs and credential of the copy of FROM, once it is done.
    RevokeRepartition {
        /// The topic copied (overrides repartition.from).
        #[arg(long)]
        from: Option<String>,
    },
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

/// What an access command does on the cluster.
enum Action {
    /// A new password and the ACLs; the properties printed.
    Grant(Grantee),
    /// The ACLs only; the password kept.
    AddAcls(Grantee),
    /// ACLs and credential removed.
    Revoke(Grantee),
    /// The ACLs only the retired names need removed; the password kept.
    Retire(Grantee, Box<Names>),
}

/// The names a deployment's principals are granted rights on.
fn names_of(cfg: &Config) -> Names {
    Names {
        topics: cfg.kafka.topics.clone(),
        aggregate_group: cfg.aggregate.exactly_once.group_id.clone(),
        emit_group: cfg.emit.exactly_once.group_id.clone(),
        late_replay_group: nearfield_aggregator::late::GROUP.to_string(),
        follower_groups: nearfield_common::kafka::FOLLOWER_GROUPS
            .iter()
            .map(|g| g.to_string())
            .collect(),
    }
}

/// The copy the flags and `[repartition]` name: its settings checked as the copy checks
/// them (`repartition.<setting>: <rule>`).
fn repartition(cfg: &Config, from: Option<String>, to: Option<String>) -> anyhow::Result<Grantee> {
    let mut r = cfg.repartition.clone();
    r.from = from.unwrap_or(r.from);
    r.to = to.unwrap_or(r.to);
    r.validate()?;
    Ok(Grantee::Repartition(Repartition { group: r.group(), from: r.from, to: r.to }))
}

/// Runs an access command; returns what to print.
pub async fn run(cmd: AccessCommand, cfg: &Config) -> anyhow::Result<String> {
    let names = names_of(cfg);
    let action = match cmd {
        AccessCommand::GrantSupplier { id } => Action::Grant(supplier(&id)?),
        AccessCommand::RevokeSupplier { id } => Action::Revoke(supplier(&id)?),
        AccessCommand::GrantStage { role: r, keep_password: false } => {
            Action::Grant(Grantee::Role(role(&r)?))
        }
        AccessCommand::GrantStage { role: r, keep_password: true } => {
            Action::AddAcls(Grantee::Role(role(&r)?))
        }
        AccessCommand::RevokeStage { role: r, retired: None } => {
            Action::Revoke(Grantee::Role(role(&r)?))
        }
        AccessCommand::RevokeStage { role: r, retired: Some(file) } => {
            let old = crate::config::load_file_alone(&file)
                .with_context(|| format!("--retired {}", file.display()))?;
            let old = names_of(&old);
            anyhow::ensure!(
                old != names,
                "--retired {} names the same topics and groups as --config: nothing to retire",
                file.display()
            );
            Action::Retire(Grantee::Role(role(&r)?), Box::new(old))
        }
        AccessCommand::GrantRepartition { from, to } => Action::Grant(repartition(cfg, from, to)?),
        AccessCommand::RevokeRepartition { from } => {
            let mut r = cfg.repartition.clone();
            r.from = from.unwrap_or(r.from);
            // A revocation removes every ACL of the copy's principal, which its source
            // alone names: the target and group need not be given (the target may be
            // gone by then).
            r.validate_from()?;
            let copy = Repartition { from: r.from, to: String::new(), group: String::new() };
            Action::Revoke(Grantee::Repartition(copy))
        }
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
        match action {
            Action::Grant(who) => grant(who),
            Action::AddAcls(who) => {
                let acls = nearfield_access::add_acls(&admin, &who, &names)
                    .with_context(|| format!("adding the ACLs of {}", who.user()))?;
                tracing::info!(principal = who.user(), acls, "ACLs added, password kept");
                Ok(String::new())
            }
            Action::Revoke(who) => revoke(who),
            Action::Retire(who, old) => {
                let (asked, deleted) = nearfield_access::retire_acls(&admin, &who, &old, &names)
                    .with_context(|| format!("removing retired ACLs of {}", who.user()))?;
                tracing::info!(
                    principal = who.user(),
                    asked,
                    deleted,
                    "retired names' ACLs removed"
                );
                Ok(String::new())
            }
        }
    })
    .await?
}
