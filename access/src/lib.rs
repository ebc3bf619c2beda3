//! Who may do what on the Kafka cluster (SPEC §7, §8): each stage, the operator, each
//! supplier and each partition-count copy (`nearfield repartition`) gets a SCRAM
//! principal of its own and only the ACLs its work needs, so Kafka itself enforces that a
//! supplier reads only its own plans and that only an operator writes the registries.
//! `nearfield access …` is the command-line face of this crate.
//!
//! # Layout
//! - [`policy`]: the rules per principal, derived from the deployment's names (pure).
//! - [`admin`]: the ACL, SCRAM and group-description admin calls on the cluster (the
//!   stages' query plane reads its group's assignment through it; the workspace's only
//!   `unsafe`, calling librdkafka's C API).
//! - [`grant`] / [`revoke`]: a principal's credential and rules, created or removed as one
//!   step, and the librdkafka properties it connects with.

#![deny(unsafe_code)]

pub mod admin;
pub mod policy;

use std::collections::BTreeMap;

pub use admin::{Admin, AdminError, GroupDescription, GroupMember, Scram};
pub use policy::{Acl, Names, Operation, Repartition, Role};

/// A principal's librdkafka settings, printed as a properties file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Property → value, in the order printed.
    pub properties: BTreeMap<&'static str, String>,
}

impl Credentials {
    /// `key=value` lines, one per property, ending with a newline.
    pub fn to_properties(&self) -> String {
        self.properties.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// A fresh random password: 32 hex digits (128 bits).
pub fn new_password() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Who a grant is for.
#[derive(Debug, Clone)]
pub enum Grantee {
    Role(Role),
    Supplier(String),
    /// A copy of one topic into another (`nearfield repartition`).
    Repartition(Repartition),
}

impl Grantee {
    /// The SCRAM user name.
    pub fn user(&self) -> String {
        match self {
            Grantee::Role(r) => r.user().to_string(),
            Grantee::Supplier(id) => policy::supplier_user(id),
            Grantee::Repartition(copy) => policy::repartition_user(&copy.from),
        }
    }

    /// The rules.
    pub fn acls(&self, names: &Names) -> Vec<Acl> {
        match self {
            Grantee::Role(r) => policy::role_acls(*r, names),
            Grantee::Supplier(id) => policy::supplier_acls(id, &names.topics),
            Grantee::Repartition(copy) => policy::repartition_acls(copy),
        }
    }
}

/// Creates (or, granted again, re-keys) `who`'s principal with a new password and its
/// ACLs; returns its settings: `bootstrap.servers`, `security.protocol`,
/// `sasl.mechanism`, `sasl.username`, `sasl.password`, and for a supplier the `group.id`
/// its ACLs allow. Granting again replaces the password (rotation): the old one stops
/// working at once.
pub fn grant(
    admin: &Admin,
    who: &Grantee,
    names: &Names,
    brokers: &str,
    security_protocol: &str,
    mechanism: Scram,
) -> Result<Credentials, AdminError> {
    let user = who.user();
    let password = new_password();
    admin.upsert_scram(&user, &password, mechanism)?;
    admin.create_acls(&who.acls(names))?;
    let mut properties = BTreeMap::new();
    properties.insert("bootstrap.servers", brokers.to_string());
    properties.insert("security.protocol", security_protocol.to_string());
    properties.insert("sasl.mechanism", mechanism.mechanism().to_string());
    properties.insert("sasl.username", user);
    properties.insert("sasl.password", password);
    if let Grantee::Supplier(id) = who {
        properties.insert("group.id", policy::supplier_group(id));
    }
    Ok(Credentials { properties })
}

/// Adds `who`'s ACLs for `names` to its principal and leaves its credential as it is:
/// the stages running with its password go on while it gains the rights of a second set
/// of topics and groups (docs/SCALING.md § Growing). Adding an ACL that exists changes
/// nothing. Returns the ACLs asked for.
pub fn add_acls(admin: &Admin, who: &Grantee, names: &Names) -> Result<usize, AdminError> {
    let acls = who.acls(names);
    admin.create_acls(&acls)?;
    Ok(acls.len())
}

/// Removes the ACLs `who` holds for the `retired` names that the `kept` ones do not need
/// (a topic set and groups retired after growing, docs/SCALING.md § Growing); the
/// credential and every ACL `kept` needs stay, so the stages running on `kept` go on.
/// Returns (ACLs `retired` alone needs, ACLs of those that existed and were deleted).
pub fn retire_acls(
    admin: &Admin,
    who: &Grantee,
    retired: &Names,
    kept: &Names,
) -> Result<(usize, usize), AdminError> {
    let acls = retired_only(who, retired, kept);
    Ok((acls.len(), admin.delete_acls(&acls)?))
}

/// The ACLs of `who` that `retired` needs and `kept` does not.
fn retired_only(who: &Grantee, retired: &Names, kept: &Names) -> Vec<Acl> {
    let keep: std::collections::BTreeSet<Acl> = who.acls(kept).into_iter().collect();
    // Both lists come sorted and without repeats (`policy`), and so does what is left.
    who.acls(retired).into_iter().filter(|a| !keep.contains(a)).collect()
}

/// What a revocation removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// ACLs deleted.
    pub acls: usize,
    /// Whether a credential was deleted.
    pub credential: bool,
}

/// Removes `who`'s ACLs and credential: it can neither authenticate nor read any more.
/// Revoking what does not exist is not an error (nothing is removed).
pub fn revoke(admin: &Admin, who: &Grantee, mechanism: Scram) -> Result<Revoked, AdminError> {
    let user = who.user();
    let acls = admin.delete_acls_of(&policy::principal(&user))?;
    let credential = admin.delete_scram(&user, mechanism)?;
    Ok(Revoked { acls, credential })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_and_fresh() {
        let (a, b) = (new_password(), new_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn credentials_print_as_a_properties_file() {
        let mut properties = BTreeMap::new();
        properties.insert("sasl.username", "supplier-acme".to_string());
        properties.insert("security.protocol", "SASL_PLAINTEXT".to_string());
        let text = Credentials { properties }.to_properties();
        assert_eq!(text, "sasl.username=supplier-acme\nsecurity.protocol=SASL_PLAINTEXT\n");
    }

    fn names(version: &str, group_suffix: &str) -> Names {
        let mut topics = nearfield_common::kafka::Topics::default();
        for t in [&mut topics.sales, &mut topics.heartbeats, &mut topics.late, &mut topics.demand] {
            *t = t.replace(".v1", version);
        }
        topics.aggregator_changelog = format!("agg{version}");
        topics.emitter_changelog = format!("emit{version}");
        Names {
            topics,
            aggregate_group: format!("nearfield-aggregator{group_suffix}"),
            emit_group: format!("nearfield-emitter{group_suffix}"),
            late_replay_group: "nearfield-late-replay".into(),
            follower_groups: vec!["nearfield-registry-follower".into()],
        }
    }

    /// Retiring the v1 names after growth removes what v1 alone needed: its topics and
    /// groups, not the registries, plan topics, cluster rights or groups v2 shares.
    #[test]
    fn retiring_a_topic_set_keeps_what_the_other_needs() {
        use policy::{Operation, Resource};
        let (v1, v2) = (names(".v1", ""), names(".v2", "-v2"));
        for role in [Role::Ingest, Role::Aggregate, Role::Emit, Role::Operator] {
            let who = Grantee::Role(role);
            let gone = retired_only(&who, &v1, &v2);
            let kept = who.acls(&v2);
            assert!(gone.iter().all(|a| !kept.contains(a)), "{role:?}");
            assert!(who.acls(&v1).iter().all(|a| gone.contains(a) || kept.contains(a)));
            let v1_only = [
                "sales.v1",
                "heartbeats.v1",
                "sales.late.v1",
                "demand.v1",
                "agg.v1",
                "emit.v1",
                "nearfield-aggregator",
                "nearfield-aggregator-",
                "nearfield-emitter",
                "nearfield-emitter-",
            ];
            for a in &gone {
                assert!(v1_only.contains(&a.name.as_str()), "{role:?} loses {a:?}");
            }
        }
        let gone = retired_only(&Grantee::Role(Role::Aggregate), &v1, &v2);
        let has = |r: Resource, name: &str, op: Operation| {
            gone.iter().any(|a| a.resource == r && a.name == name && a.operation == op)
        };
        assert!(has(Resource::Topic, "sales.v1", Operation::Read));
        assert!(has(Resource::Topic, "demand.v1", Operation::Write));
        assert!(has(Resource::Topic, "agg.v1", Operation::Write));
        assert!(has(Resource::Group, "nearfield-aggregator", Operation::Read));
        assert!(!has(Resource::Group, "nearfield-late-replay", Operation::Read), "shared");
        assert!(retired_only(&Grantee::Role(Role::Operator), &v1, &v2).is_empty());
    }
}
