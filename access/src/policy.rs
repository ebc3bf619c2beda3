//! What each principal may do on the cluster: the least privilege of each stage, the
//! operator and a supplier, derived from the deployment's topic names and group ids. Pure
//! data; [`crate::admin`] applies it.
//!
//! | principal | may |
//! |---|---|
//! | `nearfield-ingest` | write `sales`, `heartbeats`, the DLQ; read `stores`, `catalog` |
//! | `nearfield-aggregate` | read `sales`, `heartbeats`, `stores`, `sales.late`; write `demand`, `coverage`, `sales.late`, the DLQ; its changelog; its group and transactional ids |
//! | `nearfield-emit` | read `demand`, `coverage`, `catalog`; create and write the plan topics, the DLQ; its changelog; its group and transactional ids |
//! | `nearfield-operator` | write (and read) `stores` and `catalog` — nobody else may |
//! | `supplier-<id>` | read `plan.<id>.v1`, as group `supplier-<id>` (or `supplier-<id>.…`) |
//! | `nearfield-repartition-<from>` | read topic `<from>` (and its configs), write the one it is copied into; its group and transactional ids |
//!
//! No principal but the operator may write the registries, so a leaked ingest credential
//! cannot re-activate a store; a supplier reads its own plan topic and nothing else.

use Operation::{Create, Describe, DescribeConfigs, IdempotentWrite, Read, Write};
use nearfield_common::kafka::Topics;

/// The kind of resource an ACL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
    Cluster,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    Literal,
    Prefixed,
}

/// An operation an ACL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Create,
    Describe,
    DescribeConfigs,
    IdempotentWrite,
}

impl Operation {
    /// Its name in messages (`read`, `write`, …).
    pub fn label(self) -> &'static str {
        match self {
            Read => "read",
            Write => "write",
            Create => "create",
            Describe => "describe",
            DescribeConfigs => "describe the configs of",
            IdempotentWrite => "write idempotently to",
        }
    }
}

/// One ALLOW rule for one principal, from any host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    pub resource: Resource,
    pub name: String,
    pub pattern: Pattern,
    /// `User:<name>`.
    pub principal: String,
    pub operation: Operation,
}

/// The cluster resource's only name.
pub const CLUSTER: &str = "kafka-cluster";

/// A nearfield stage, or the operator: the principals a deployment runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Aggregate,
    Emit,
    Operator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Aggregate, Role::Emit, Role::Operator];

    /// The SCRAM user name of the role.
    pub fn user(self) -> &'static str {
        match self {
            Role::Ingest => "nearfield-ingest",
            Role::Aggregate => "nearfield-aggregate",
            Role::Emit => "nearfield-emit",
            Role::Operator => "nearfield-operator",
        }
    }

    /// Parses `ingest`, `aggregate`, `emit` or `operator`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.user().strip_prefix("nearfield-") == Some(s))
    }
}

/// The names the rules are about: the deployment's topics and the stages' consumer groups
/// (a stage's transactional ids are `<group>-<instance>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub topics: Topics,
    pub aggregate_group: String,
    pub emit_group: String,
    /// The group (and transactional id) of `nearfield replay --late`.
    pub late_replay_group: String,
    /// Groups the registry followers read as (they never commit, but a broker may still
    /// check them).
    pub follower_groups: Vec<String>,
}

/// The SCRAM user name of supplier `id`.
pub fn supplier_user(id: &str) -> String {
    format!("supplier-{id}")
}

/// `User:<user>`.
pub fn principal(user: &str) -> String {
    format!("User:{user}")
}

struct Rules {
    principal: String,
    acls: Vec<Acl>,
}

impl Rules {
    fn new(user: &str) -> Self {
        Rules { principal: principal(user), acls: Vec::new() }
    }

    fn allow(&mut self, resource: Resource, name: &str, pattern: Pattern, ops: &[Operation]) {
        for &operation in ops {
            self.acls.push(Acl {
                resource,
                name: name.to_string(),
                pattern,
                principal: self.principal.clone(),
                operation,
            });
        }
    }

    fn topics(&mut self, names: &[&String], ops: &[Operation]) {
        for n in names {
            self.allow(Resource::Topic, n, Pattern::Literal, ops);
        }
    }

    fn groups(&mut self, names: &[String]) {
        for n in names {
            self.allow(Resource::Group, n, Pattern::Literal, &[Read]);
        }
    }

    /// A transactional stage: its consumer group, and its transactional ids
    /// `<group>-<instance>`.
    fn transactional(&mut self, group: &str) {
        self.allow(Resource::Group, group, Pattern::Literal, &[Read]);
        let prefix = format!("{group}-");
        self.allow(Resource::TransactionalId, &prefix, Pattern::Prefixed, &[Write, Describe]);
    }

    fn done(mut self) -> Vec<Acl> {
        self.acls.sort();
        self.acls.dedup();
        self.acls
    }
}

/// The rules of `role`.
pub fn role_acls(role: Role, n: &Names) -> Vec<Acl> {
    let t = &n.topics;
    let mut r = Rules::new(role.user());
    match role {
        Role::Ingest => {
            r.topics(&[&t.sales, &t.heartbeats, &t.dlq], &[Write, Describe]);
            r.topics(&[&t.stores, &t.catalog], &[Read, Describe]);
            r.allow(Resource::Cluster, CLUSTER, Pattern::Literal, &[IdempotentWrite]);
            r.groups(&n.follower_groups);
        }
        Role::Aggregate => {
            r.topics(&[&t.sales, &t.heartbeats, &t.stores, &t.late], &[Read, Describe]);
            r.topics(&[&t.demand, &t.coverage, &t.late, &t.dlq], &[Write, Describe]);
            r.topics(&[&t.aggregator_changelog], &[Read, Write, Describe]);
            r.transactional(&n.aggregate_group);
            r.transactional(&n.late_replay_group);
            r.groups(&n.follower_groups);
        }
        Role::Emit => {
            r.topics(&[&t.demand, &t.coverage, &t.catalog], &[Read, Describe]);
            r.topics(&[&t.dlq], &[Write, Describe]);
            r.topics(&[&t.emitter_changelog], &[Read, Write, Describe]);
            r.allow(Resource::Topic, &t.plan_prefix, Pattern::Prefixed, &[Create, Write, Describe]);
            r.transactional(&n.emit_group);
            r.groups(&n.follower_groups);
        }
        Role::Operator => {
            r.topics(&[&t.stores, &t.catalog], &[Read, Write, Describe]);
            r.allow(Resource::Cluster, CLUSTER, Pattern::Literal, &[IdempotentWrite]);
        }
    }
    r.done()
}

/// The group a supplier consumes its plans as (`group.id`); groups under
/// `<group>.` are its own too.
pub fn supplier_group(id: &str) -> String {
    supplier_user(id)
}

/// The rules of supplier `id`: read its plan topic, as its own group.
pub fn supplier_acls(id: &str, topics: &Topics) -> Vec<Acl> {
    let mut r = Rules::new(&supplier_user(id));
    r.topics(&[&topics.plan(id)], &[Read, Describe]);
    let group = supplier_group(id);
    r.allow(Resource::Group, &group, Pattern::Literal, &[Read]);
    r.allow(Resource::Group, &format!("{group}."), Pattern::Prefixed, &[Read]);
    r.done()
}

/// A copy of one topic into another (`nearfield repartition`, growing a live
/// deployment's partition count: docs/SCALING.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repartition {
    /// The topic copied.
    pub from: String,
    /// The topic written.
    pub to: String,
    /// The copy's consumer group (its transactional ids are `<group>-<instance>`).
    pub group: String,
}

/// The SCRAM user name of the copy of topic `from`: one principal a copy, so the right
/// to read one topic set and write the other ends with the copy (`revoke-repartition`).
pub fn repartition_user(from: &str) -> String {
    format!("nearfield-repartition-{from}")
}

/// The rules of a copy: read its source and the source's configs (a compacted source is
/// refused), write its target, as its own group and transactional ids. The DLQ is not
/// among them: a copy decodes nothing and refuses nothing.
pub fn repartition_acls(copy: &Repartition) -> Vec<Acl> {
    let mut r = Rules::new(&repartition_user(&copy.from));
    r.topics(&[&copy.from], &[Read, Describe, DescribeConfigs]);
    r.topics(&[&copy.to], &[Write, Describe]);
    r.transactional(&copy.group);
    r.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            topics: Topics::default(),
            aggregate_group: "nearfield-aggregator".into(),
            emit_group: "nearfield-emitter".into(),
            late_replay_group: "nearfield-late-replay".into(),
            follower_groups: vec!["nearfield-registry-follower".into()],
        }
    }

    fn may(acls: &[Acl], resource: Resource, name: &str, op: Operation) -> bool {
        acls.iter().any(|a| {
            a.resource == resource
                && a.operation == op
                && match a.pattern {
                    Pattern::Literal => a.name == name,
                    Pattern::Prefixed => name.starts_with(&a.name),
                }
        })
    }

    #[test]
    fn only_the_operator_writes_the_registries() {
        let n = names();
        for role in Role::ALL {
            let acls = role_acls(role, &n);
            for topic in ["stores.v1", "catalog.v1"] {
                assert_eq!(
                    may(&acls, Resource::Topic, topic, Write),
                    role == Role::Operator,
                    "{role:?} on {topic}"
                );
            }
        }
    }

    #[test]
    fn ingest_writes_sales_and_the_dlq_and_reads_nothing_it_does_not_need() {
        let acls = role_acls(Role::Ingest, &names());
        assert!(may(&acls, Resource::Topic, "sales.v1", Write));
        assert!(may(&acls, Resource::Topic, "sales.dlq.v1", Write));
        assert!(!may(&acls, Resource::Topic, "sales.v1", Read));
        assert!(!may(&acls, Resource::Topic, "demand.v1", Write));
        assert!(!may(&acls, Resource::Topic, "plan.acme.v1", Read));
    }

    #[test]
    fn a_supplier_reads_its_own_plans_only() {
        let acls = supplier_acls("acme", &Topics::default());
        assert!(may(&acls, Resource::Topic, "plan.acme.v1", Read));
        assert!(!may(&acls, Resource::Topic, "plan.acme2.v1", Read));
        assert!(!may(&acls, Resource::Topic, "plan.other.v1", Read));
        assert!(!acls.iter().any(|a| a.operation == Write || a.operation == Create));
        assert!(may(&acls, Resource::Group, "supplier-acme", Read));
        assert!(may(&acls, Resource::Group, "supplier-acme.dashboard", Read));
        // A supplier whose id extends another's gets none of its groups.
        assert!(!may(&acls, Resource::Group, "supplier-acme2", Read));
        assert!(acls.iter().all(|a| a.principal == "User:supplier-acme"));
    }

    #[test]
    fn transactional_stages_own_their_ids_and_groups() {
        let n = names();
        let agg = role_acls(Role::Aggregate, &n);
        assert!(may(&agg, Resource::TransactionalId, "nearfield-aggregator-pod-0", Write));
        assert!(!may(&agg, Resource::TransactionalId, "nearfield-emitter-pod-0", Write));
        assert!(may(&agg, Resource::Group, "nearfield-aggregator", Read));
        let emit = role_acls(Role::Emit, &n);
        assert!(may(&emit, Resource::Topic, "plan.acme.v1", Create));
        assert!(may(&emit, Resource::Topic, "plan.acme.v1", Write));
        assert!(!may(&emit, Resource::Topic, "plan.acme.v1", Read));
    }

    #[test]
    fn a_copy_reads_its_source_and_writes_its_target_only() {
        let copy = Repartition {
            from: "sales.v1".into(),
            to: "sales.v2".into(),
            group: "nearfield-repartition-sales.v1".into(),
        };
        let acls = repartition_acls(&copy);
        assert!(may(&acls, Resource::Topic, "sales.v1", Read));
        assert!(may(&acls, Resource::Topic, "sales.v1", DescribeConfigs));
        assert!(may(&acls, Resource::Topic, "sales.v2", Write));
        assert!(!may(&acls, Resource::Topic, "sales.v1", Write), "writes its source");
        assert!(!may(&acls, Resource::Topic, "sales.v2", Read), "reads its target");
        for topic in ["sales.dlq.v1", "demand.v1", "stores.v1", "heartbeats.v1", "plan.acme.v1"] {
            assert!(!may(&acls, Resource::Topic, topic, Read), "reads {topic}");
            assert!(!may(&acls, Resource::Topic, topic, Write), "writes {topic}");
        }
        let group = "nearfield-repartition-sales.v1";
        assert!(may(&acls, Resource::Group, group, Read));
        assert!(may(&acls, Resource::TransactionalId, &format!("{group}-pod-0"), Write));
        assert!(!may(&acls, Resource::TransactionalId, "nearfield-aggregator-pod-0", Write));
        assert!(!acls.iter().any(|a| a.resource == Resource::Cluster));
        assert!(acls.iter().all(|a| a.principal == "User:nearfield-repartition-sales.v1"));
    }

    #[test]
    fn roles_parse_by_stage_name() {
        assert_eq!(Role::parse("ingest"), Some(Role::Ingest));
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse("nearfield-ingest"), None);
        assert_eq!(Role::parse("admin"), None);
    }
}
