//! The admin calls the rdkafka crate does not wrap: create and delete ACLs, upsert and
//! delete SCRAM credentials, describe a consumer group's members and assignment, and what
//! this principal may do on a topic. They go through librdkafka's C API on the handle of an
//! rdkafka `AdminClient`, each on a queue of its own, and block until the broker answers
//! or the timeout passes (call them off the async runtime).
//!
//! This is the only module of the workspace with `unsafe` code. Every pointer it creates
//! is owned by a guard that frees it on every path; every pointer librdkafka returns is
//! read before the event that owns it is destroyed.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka_sys as rd;

use crate::policy::{Acl, Operation, Pattern, Resource};

/// An admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot create the Kafka admin client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("{op}: no answer from the cluster within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("{op} refused: {code}: {message}")]
    Refused { op: &'static str, code: String, message: String },
    #[error("{op} {what}: {code}: {message}")]
    Item { op: &'static str, what: String, code: String, message: String },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl AdminError {
    /// The broker's error code name (`CLUSTER_AUTHORIZATION_FAILED`, …), when it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminError::Refused { code, .. } | AdminError::Item { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A SCRAM mechanism credentials are stored for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scram {
    Sha256,
    Sha512,
}

impl Scram {
    /// From a `sasl.mechanism` value.
    pub fn from_mechanism(m: &str) -> Option<Scram> {
        match m.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(Scram::Sha256),
            "SCRAM-SHA-512" => Some(Scram::Sha512),
            _ => None,
        }
    }

    /// The `sasl.mechanism` value.
    pub fn mechanism(self) -> &'static str {
        match self {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn raw(self) -> rd::rd_kafka_ScramMechanism_t {
        match self {
            Scram::Sha256 => rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256,
            Scram::Sha512 => rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
        }
    }
}

/// Iterations of a stored SCRAM credential (Kafka's minimum is 4096).
const SCRAM_ITERATIONS: i32 = 8192;

/// An admin connection to the cluster for ACLs and credentials.
pub struct Admin {
    client: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Frees what it holds when dropped.
struct Guard<T, F: FnMut(*mut T)>(*mut T, F);

impl<T, F: FnMut(*mut T)> Drop for Guard<T, F> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            (self.1)(self.0);
        }
    }
}

/// A result event, destroyed when dropped.
type Event = Guard<rd::rd_kafka_event_t, fn(*mut rd::rd_kafka_event_t)>;

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner,
    // which every caller keeps alive across this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn cstring(what: &str, s: &str) -> Result<CString, AdminError> {
    CString::new(s)
        .map_err(|_| AdminError::Invalid { what: what.into(), message: "holds a NUL byte".into() })
}

/// The first of the `n` results at `items` of an admin call about `what`.
///
/// # Safety
/// `items` points at `n` pointers (or is null when `n` is 0), owned by a live event.
unsafe fn first<T>(
    items: *mut *const T,
    n: usize,
    op: &'static str,
    what: &str,
) -> Result<*const T, AdminError> {
    if n == 0 || items.is_null() {
        return Err(AdminError::Refused {
            op,
            code: "NO_RESULT".into(),
            message: format!("no description of {what}"),
        });
    }
    // SAFETY: `n` > 0 pointers at `items`, by the caller's contract.
    Ok(unsafe { *items })
}

/// `Err` with the per-item error of `what`, when there is one.
fn item_checked(
    op: &'static str,
    what: &str,
    err: *const rd::rd_kafka_error_t,
) -> Result<(), AdminError> {
    match item_error(err) {
        Some((code, message)) => Err(AdminError::Item { op, what: what.into(), code, message }),
        None => Ok(()),
    }
}

/// The code name and message of a per-item error; `None` when there is none.
fn item_error(err: *const rd::rd_kafka_error_t) -> Option<(String, String)> {
    if err.is_null() {
        return None;
    }
    // SAFETY: `err` is a live error owned by the result event the caller holds.
    unsafe {
        // Some results carry an error object that says NO_ERROR.
        if rd::rd_kafka_error_code(err) == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        Some((text(rd::rd_kafka_error_name(err)), text(rd::rd_kafka_error_string(err))))
    }
}

impl Admin {
    /// Connects with `config` (brokers and the admin's credentials).
    pub fn new(config: &ClientConfig, timeout: Duration) -> Result<Admin, AdminError> {
        Ok(Admin { client: config.create()?, timeout })
    }

    /// Sends one request (what `send` does with the handle, options and queue) and waits
    /// for its result event; returns the event, checked for a request-level error.
    fn call(
        &self,
        op: &'static str,
        api: rd::rd_kafka_admin_op_t,
        send: impl FnOnce(
            *mut rd::rd_kafka_t,
            *mut rd::rd_kafka_AdminOptions_t,
            *mut rd::rd_kafka_queue_t,
        ),
    ) -> Result<Event, AdminError> {
        let rk = self.client.inner().native_ptr();
        let ms = c_int::try_from(self.timeout.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: `rk` is the live handle of `self.client`, borrowed for this call; the
        // queue and options are freed by their guards after the event was taken.
        unsafe {
            let queue = Guard(rd::rd_kafka_queue_new(rk), |q| rd::rd_kafka_queue_destroy(q));
            let opts = Guard(rd::rd_kafka_AdminOptions_new(rk, api), |o| {
                rd::rd_kafka_AdminOptions_destroy(o)
            });
            let mut errstr = [0 as c_char; 512];
            rd::rd_kafka_AdminOptions_set_request_timeout(
                opts.0,
                ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            send(rk, opts.0, queue.0);
            let event: Event =
                Guard(rd::rd_kafka_queue_poll(queue.0, ms.saturating_add(5_000)), |e| {
                    rd::rd_kafka_event_destroy(e)
                });
            if event.0.is_null() {
                return Err(AdminError::Timeout { op, timeout: self.timeout });
            }
            let code = rd::rd_kafka_event_error(event.0);
            if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(AdminError::Refused {
                    op,
                    code: format!("{code:?}").trim_start_matches("RD_KAFKA_RESP_ERR_").to_string(),
                    message: text(rd::rd_kafka_event_error_string(event.0)),
                });
            }
            Ok(event)
        }
    }

    /// Creates `acls` (ALLOW, any host). Creating one that exists is not an error.
    pub fn create_acls(&self, acls: &[Acl]) -> Result<(), AdminError> {
        if acls.is_empty() {
            return Ok(());
        }
        let bindings = AclBindings::new(acls)?;
        let event = self.call(
            "CreateAcls",
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
            |rk, opts, queue| {
                let mut ptrs = bindings.ptrs();
                // SAFETY: librdkafka copies the bindings; they stay ours to free.
                unsafe { rd::rd_kafka_CreateAcls(rk, ptrs.as_mut_ptr(), ptrs.len(), opts, queue) }
            },
        )?;
        // SAFETY: the result and its items belong to `event`, alive until the end of scope.
        unsafe {
            let result = rd::rd_kafka_event_CreateAcls_result(event.0);
            let mut n = 0usize;
            let items = rd::rd_kafka_CreateAcls_result_acls(result, &mut n);
            for i in 0..n {
                if let Some((code, message)) =
                    item_error(rd::rd_kafka_acl_result_error(*items.add(i)))
                {
                    let what = acls.get(i).map(describe).unwrap_or_default();
                    return Err(AdminError::Item { op: "CreateAcls", what, code, message });
                }
            }
        }
        Ok(())
    }

    /// Deletes every ACL of `principal` (`User:<name>`); returns how many there were.
    pub fn delete_acls_of(&self, principal: &str) -> Result<usize, AdminError> {
        let p = cstring("principal", principal)?;
        let mut errstr = [0 as c_char; 512];
        // SAFETY: every pointer argument is a live NUL-terminated string or null (any).
        let filter = unsafe {
            rd::rd_kafka_AclBindingFilter_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
                std::ptr::null(),
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
                p.as_ptr(),
                std::ptr::null(),
                rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if filter.is_null() {
            return Err(AdminError::Invalid {
                what: principal.into(),
                message: text(errstr.as_ptr()),
            });
        }
        // SAFETY: `filter` was just created and is freed once, here.
        let filter = Guard(filter, |f| unsafe { rd::rd_kafka_AclBinding_destroy(f) });
        self.delete_matching(&[filter.0], principal)
    }

    /// Deletes exactly `acls` (ALLOW, any host), those that exist; returns how many did.
    pub fn delete_acls(&self, acls: &[Acl]) -> Result<usize, AdminError> {
        if acls.is_empty() {
            return Ok(0);
        }
        // A binding is a filter matching itself (librdkafka's filter is the same type).
        let bindings = AclBindings::new(acls)?;
        let what = format!("{} ACLs of {}", acls.len(), acls[0].principal);
        self.delete_matching(&bindings.ptrs(), &what)
    }

    /// Deletes the ACLs matching any of `filters` (ours to free); returns how many.
    fn delete_matching(
        &self,
        filters: &[*mut rd::rd_kafka_AclBinding_t],
        what: &str,
    ) -> Result<usize, AdminError> {
        let event = self.call(
            "DeleteAcls",
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS,
            |rk, opts, queue| {
                let mut ptrs = filters.to_vec();
                // SAFETY: librdkafka copies the filters; they stay ours to free.
                unsafe { rd::rd_kafka_DeleteAcls(rk, ptrs.as_mut_ptr(), ptrs.len(), opts, queue) }
            },
        )?;
        let mut deleted = 0;
        // SAFETY: the result and its items belong to `event`, alive until the end of scope.
        unsafe {
            let result = rd::rd_kafka_event_DeleteAcls_result(event.0);
            let mut n = 0usize;
            let items = rd::rd_kafka_DeleteAcls_result_responses(result, &mut n);
            for i in 0..n {
                let item = *items.add(i);
                if let Some((code, message)) =
                    item_error(rd::rd_kafka_DeleteAcls_result_response_error(item))
                {
                    return Err(AdminError::Item {
                        op: "DeleteAcls",
                        what: what.into(),
                        code,
                        message,
                    });
                }
                let mut m = 0usize;
                rd::rd_kafka_DeleteAcls_result_response_matching_acls(item, &mut m);
                deleted += m;
            }
        }
        Ok(deleted)
    }

    /// Sets `user`'s SCRAM credential for `mechanism` to `password` (creates or replaces).
    pub fn upsert_scram(
        &self,
        user: &str,
        password: &str,
        mechanism: Scram,
    ) -> Result<(), AdminError> {
        let u = cstring("user", user)?;
        let salt: [u8; 32] = rand::random();
        // SAFETY: librdkafka copies the name, password and salt.
        let alteration = unsafe {
            rd::rd_kafka_UserScramCredentialUpsertion_new(
                u.as_ptr(),
                mechanism.raw(),
                SCRAM_ITERATIONS,
                password.as_ptr(),
                password.len(),
                salt.as_ptr(),
                salt.len(),
            )
        };
        self.alter_scram(user, alteration)
    }

    /// Deletes `user`'s SCRAM credential for `mechanism`; `Ok(false)` when it had none.
    pub fn delete_scram(&self, user: &str, mechanism: Scram) -> Result<bool, AdminError> {
        let u = cstring("user", user)?;
        // SAFETY: librdkafka copies the name.
        let alteration =
            unsafe { rd::rd_kafka_UserScramCredentialDeletion_new(u.as_ptr(), mechanism.raw()) };
        match self.alter_scram(user, alteration) {
            Ok(()) => Ok(true),
            Err(e) if e.code() == Some("RESOURCE_NOT_FOUND") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn alter_scram(
        &self,
        user: &str,
        alteration: *mut rd::rd_kafka_UserScramCredentialAlteration_t,
    ) -> Result<(), AdminError> {
        if alteration.is_null() {
            return Err(AdminError::Invalid {
                what: user.into(),
                message: "not a SCRAM credential".into(),
            });
        }
        // SAFETY: `alteration` was just created and is freed once, here.
        let alteration =
            Guard(alteration, |a| unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy(a) });
        let event = self.call(
            "AlterUserScramCredentials",
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
            |rk, opts, queue| {
                let mut ptrs = [alteration.0];
                // SAFETY: librdkafka copies the alteration; it stays ours to free.
                unsafe {
                    rd::rd_kafka_AlterUserScramCredentials(rk, ptrs.as_mut_ptr(), 1, opts, queue)
                }
            },
        )?;
        // SAFETY: the result and its items belong to `event`, alive until the end of scope.
        unsafe {
            let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event.0);
            let mut n = 0usize;
            let items = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut n);
            for i in 0..n {
                let item = *items.add(i);
                if let Some((code, message)) =
                    item_error(rd::rd_kafka_AlterUserScramCredentials_result_response_error(item))
                {
                    return Err(AdminError::Item {
                        op: "AlterUserScramCredentials",
                        what: user.into(),
                        code,
                        message,
                    });
                }
            }
        }
        Ok(())
    }
}

/// One member of a consumer group, as the group coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member's `client.id` (nearfield's stages carry their query address in it).
    pub client_id: String,
    /// The address the coordinator saw the member connect from.
    pub host: String,
    /// The partitions assigned to it: (topic, partition).
    pub assignment: Vec<(String, i32)>,
}

/// A consumer group, as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// `true` when the group is stable (not rebalancing): its assignment is current.
    pub stable: bool,
    pub members: Vec<GroupMember>,
}

impl Admin {
    /// The number of partitions of `topic`.
    pub fn partition_count(&self, topic: &str) -> Result<i32, AdminError> {
        use rdkafka::client::Client;
        let client: &Client<DefaultClientContext> = self.client.inner();
        let md = client.fetch_metadata(Some(topic), self.timeout)?;
        match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
            }
            _ => Err(AdminError::Invalid {
                what: topic.into(),
                message: "the topic is missing or not readable".into(),
            }),
        }
    }

    /// The operations this principal may perform on `topic` as the broker computes them
    /// from its ACLs (DescribeTopics with authorized operations, KIP-430: implications
    /// such as READ → DESCRIBE included); `None` when the broker did not say. Needs
    /// DESCRIBE on the topic. Operations nearfield never grants are left out.
    pub fn topic_operations(&self, topic: &str) -> Result<Option<Vec<Operation>>, AdminError> {
        let t = cstring("topic", topic)?;
        let mut names = [t.as_ptr()];
        // SAFETY: librdkafka copies the names into the collection, which its guard frees
        // after the call; `t` outlives this statement.
        let topics = unsafe {
            Guard(rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1), |c| {
                rd::rd_kafka_TopicCollection_destroy(c)
            })
        };
        let event = self.call(
            "DescribeTopics",
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            |rk, opts, queue| {
                // SAFETY: `opts` and `queue` are live for the call; the collection is
                // read by librdkafka before `DescribeTopics` returns; an error object
                // returned by the option setter is freed at once.
                unsafe {
                    let err = rd::rd_kafka_AdminOptions_set_include_authorized_operations(opts, 1);
                    if !err.is_null() {
                        rd::rd_kafka_error_destroy(err);
                    }
                    rd::rd_kafka_DescribeTopics(rk, topics.0, opts, queue);
                }
            },
        )?;
        // SAFETY: the result, its descriptions and their operation arrays belong to
        // `event`, alive until the end of scope. The operations are read as integers, so
        // a value this binding does not know is skipped, never misread.
        unsafe {
            let result = rd::rd_kafka_event_DescribeTopics_result(event.0);
            let mut n = 0usize;
            let descs = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
            let desc = first(descs, n, "DescribeTopics", topic)?;
            item_checked("DescribeTopics", topic, rd::rd_kafka_TopicDescription_error(desc))?;
            let mut cnt = 0usize;
            let ops = rd::rd_kafka_TopicDescription_authorized_operations(desc, &mut cnt);
            if ops.is_null() {
                return Ok(None);
            }
            let ops = ops.cast::<c_int>();
            Ok(Some((0..cnt).filter_map(|i| operation_of(*ops.add(i))).collect()))
        }
    }

    /// Describes consumer group `group`: its members and their assigned partitions
    /// (DescribeConsumerGroups). Needs DESCRIBE on the group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription, AdminError> {
        let g = cstring("group", group)?;
        let event = self.call(
            "DescribeConsumerGroups",
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
            |rk, opts, queue| {
                let mut ptrs = [g.as_ptr()];
                // SAFETY: librdkafka copies the group name; `g` outlives the call.
                unsafe {
                    rd::rd_kafka_DescribeConsumerGroups(rk, ptrs.as_mut_ptr(), 1, opts, queue)
                }
            },
        )?;
        // SAFETY: the result, its groups, members and partition lists belong to `event`,
        // alive until the end of scope; every string is copied before it ends.
        unsafe {
            let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event.0);
            let mut n = 0usize;
            let groups = rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut n);
            let desc = first(groups, n, "DescribeConsumerGroups", group)?;
            let error = rd::rd_kafka_ConsumerGroupDescription_error(desc);
            item_checked("DescribeConsumerGroups", group, error)?;
            let stable = rd::rd_kafka_ConsumerGroupDescription_state(desc)
                == rd::rd_kafka_consumer_group_state_t::RD_KAFKA_CONSUMER_GROUP_STATE_STABLE;
            let count = rd::rd_kafka_ConsumerGroupDescription_member_count(desc);
            let mut members = Vec::with_capacity(count);
            for i in 0..count {
                let m = rd::rd_kafka_ConsumerGroupDescription_member(desc, i);
                if m.is_null() {
                    continue;
                }
                let mut assignment = Vec::new();
                let a = rd::rd_kafka_MemberDescription_assignment(m);
                let list = if a.is_null() {
                    std::ptr::null()
                } else {
                    rd::rd_kafka_MemberAssignment_partitions(a)
                };
                if !list.is_null() {
                    let cnt = usize::try_from((*list).cnt).unwrap_or(0);
                    for j in 0..cnt {
                        let tp = &*(*list).elems.add(j);
                        assignment.push((text(tp.topic), tp.partition));
                    }
                }
                members.push(GroupMember {
                    client_id: text(rd::rd_kafka_MemberDescription_client_id(m)),
                    host: text(rd::rd_kafka_MemberDescription_host(m)),
                    assignment,
                });
            }
            Ok(GroupDescription { stable, members })
        }
    }
}

fn describe(a: &Acl) -> String {
    format!("{:?} {:?} {} {:?} for {}", a.operation, a.resource, a.name, a.pattern, a.principal)
}

/// ACL bindings owned on the Rust side.
struct AclBindings(Vec<*mut rd::rd_kafka_AclBinding_t>);

impl AclBindings {
    fn new(acls: &[Acl]) -> Result<AclBindings, AdminError> {
        let mut out = AclBindings(Vec::with_capacity(acls.len()));
        for a in acls {
            let name = cstring("resource name", &a.name)?;
            let principal = cstring("principal", &a.principal)?;
            let mut errstr = [0 as c_char; 512];
            // SAFETY: the strings are live and NUL-terminated; librdkafka copies them.
            let b = unsafe {
                rd::rd_kafka_AclBinding_new(
                    resource(a.resource),
                    name.as_ptr(),
                    pattern(a.pattern),
                    principal.as_ptr(),
                    c"*".as_ptr(),
                    operation(a.operation),
                    rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            };
            if b.is_null() {
                return Err(AdminError::Invalid {
                    what: describe(a),
                    message: text(errstr.as_ptr()),
                });
            }
            out.0.push(b);
        }
        Ok(out)
    }

    fn ptrs(&self) -> Vec<*mut rd::rd_kafka_AclBinding_t> {
        self.0.clone()
    }
}

impl Drop for AclBindings {
    fn drop(&mut self) {
        for b in self.0.drain(..) {
            // SAFETY: each binding was created by `new` and is freed once, here.
            unsafe { rd::rd_kafka_AclBinding_destroy(b) }
        }
    }
}

fn resource(r: Resource) -> rd::rd_kafka_ResourceType_t {
    use rd::rd_kafka_ResourceType_t as T;
    match r {
        Resource::Topic => T::RD_KAFKA_RESOURCE_TOPIC,
        Resource::Group => T::RD_KAFKA_RESOURCE_GROUP,
        Resource::TransactionalId => T::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
        // Kafka's CLUSTER resource type: librdkafka names its code BROKER.
        Resource::Cluster => T::RD_KAFKA_RESOURCE_BROKER,
    }
}

fn pattern(p: Pattern) -> rd::rd_kafka_ResourcePatternType_t {
    use rd::rd_kafka_ResourcePatternType_t as T;
    match p {
        Pattern::Literal => T::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        Pattern::Prefixed => T::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    }
}

/// The operation an authorized-operations entry names (the broker lists each operation
/// allowed, never ALL); `None` for one nearfield never grants (ALTER, DELETE, …).
fn operation_of(v: c_int) -> Option<Operation> {
    [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Describe,
        Operation::DescribeConfigs,
        Operation::IdempotentWrite,
    ]
    .into_iter()
    .find(|&o| operation(o) as c_int == v)
}

fn operation(o: Operation) -> rd::rd_kafka_AclOperation_t {
    use rd::rd_kafka_AclOperation_t as T;
    match o {
        Operation::Read => T::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => T::RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Create => T::RD_KAFKA_ACL_OPERATION_CREATE,
        Operation::Describe => T::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Operation::DescribeConfigs => T::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
        Operation::IdempotentWrite => T::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
    }
}
