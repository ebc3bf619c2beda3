//! The query plane: any instance of a stage answers for every partition, the way Kafka
//! Streams' interactive queries do with `application.server`.
//!
//! Each instance's group consumer carries its advertised query address in its
//! `client.id` ([`member_client_id`]); the [`Directory`] asks the group coordinator who
//! owns which input partition (DescribeConsumerGroups) and reads those addresses back.
//! [`Plane::gather`] answers a question for a set of partitions: this instance's own from
//! its loop (through the mailbox), the others' by asking their owners over HTTP with
//! `scope=local&partitions=…` (an instance asked that way answers from its own state only,
//! so forwarding never loops). Partitions nobody could answer yet (restoring, moving in a
//! rebalance) are asked again after a fresh look at the group, until a deadline; the
//! [`Coverage`] of the answer says which instances answered which partitions and what
//! is still missing or restoring.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use nearfield_access::Admin;
use nearfield_common::kafka::KafkaSettings;
use nearfield_common::operator::OperatorToken;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::EosError;
use crate::query::QueryError;

/// How long a request may spend gathering answers (below the mailbox's own timeout).
pub const DEADLINE: Duration = Duration::from_secs(8);
/// How long one forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// A routing table younger than this is used as it is.
const FRESH: Duration = Duration::from_secs(2);
/// Pause between rounds while partitions are restoring or moving.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The query parameter that asks an instance for its own partitions only.
pub const SCOPE_PARAM: &str = "scope";
/// The partitions asked for with `scope=local` (comma-separated).
pub const PARTITIONS_PARAM: &str = "partitions";

/// The `client.id` of a stage instance's group consumer: `nearfield-<stage>;<instance>;<url>`.
pub fn member_client_id(stage: &str, instance: &str, url: &str) -> String {
    format!("nearfield-{stage};{instance};{url}")
}

/// The instance and query address in a member's `client.id`, if it is a nearfield stage's.
pub fn parse_client_id(client_id: &str) -> Option<(&str, &str)> {
    let rest = client_id.strip_prefix("nearfield-")?;
    let mut parts = rest.splitn(3, ';');
    let (_stage, instance, url) = (parts.next()?, parts.next()?, parts.next()?);
    (!instance.is_empty() && url.starts_with("http")).then_some((instance, url))
}

/// Who answers for a partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub instance: String,
    pub url: String,
}

/// The group's assignment of the input topic, as last described.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Partitions of the input topic.
    pub partitions: i32,
    pub owners: BTreeMap<i32, Owner>,
    fetched: Instant,
}

/// The routing table, fetched from the group coordinator on demand and shared
/// lock-free with the request handlers.
pub struct Directory(Arc<Shared>);

struct Shared {
    admin: Admin,
    group: String,
    topic: String,
    current: ArcSwapOption<Routing>,
    refreshing: AtomicBool,
    updated: watch::Sender<u64>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("group", &self.0.group)
            .field("topic", &self.0.topic)
            .finish()
    }
}

impl Directory {
    /// A directory of `group`'s members on `topic`.
    pub fn new(settings: &KafkaSettings, group: &str, topic: &str) -> Result<Directory, EosError> {
        let config = crate::clients::layered(settings, &[], &[])?;
        let admin = Admin::new(&config, Duration::from_secs(5)).map_err(|e| EosError::Client {
            client: "query-plane admin",
            source: rdkafka::error::KafkaError::ClientCreation(e.to_string()),
        })?;
        Ok(Directory(Arc::new(Shared {
            admin,
            group: group.to_string(),
            topic: topic.to_string(),
            current: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            updated: watch::channel(0).0,
        })))
    }

    /// The routing table. A table older than [`FRESH`] is still answered at once while a
    /// fresh one is fetched in the background; `force` (after an answer showed the table
    /// wrong) waits for a fresh one.
    pub async fn routing(&self, force: bool) -> Result<Arc<Routing>, String> {
        let current = self.0.current.load_full();
        match current {
            Some(r) if !force => {
                if r.fetched.elapsed() >= FRESH && !self.0.refreshing.load(Ordering::Acquire) {
                    let shared = Arc::clone(&self.0);
                    tokio::spawn(async move { refresh(&shared).await });
                }
                Ok(r)
            }
            _ => refresh(&self.0).await,
        }
    }
}

/// Fetches the table, or waits for the fetch already under way and takes its result.
async fn refresh(shared: &Arc<Shared>) -> Result<Arc<Routing>, String> {
    let mut updated = shared.updated.subscribe();
    if shared.refreshing.swap(true, Ordering::AcqRel) {
        let _ = tokio::time::timeout(DEADLINE, updated.changed()).await;
        return shared.current.load_full().ok_or_else(|| "the group is not described yet".into());
    }
    let s = Arc::clone(shared);
    let fetched = tokio::task::spawn_blocking(move || describe(&s.admin, &s.group, &s.topic)).await;
    let fetched = fetched.map_err(|e| e.to_string()).and_then(|r| r);
    if let Ok(r) = &fetched {
        shared.current.store(Some(Arc::new(r.clone())));
    }
    shared.refreshing.store(false, Ordering::Release);
    shared.updated.send_modify(|v| *v = v.wrapping_add(1));
    fetched.map(Arc::new)
}

fn describe(admin: &Admin, group: &str, topic: &str) -> Result<Routing, String> {
    let partitions = admin.partition_count(topic).map_err(|e| e.to_string())?;
    let g = admin.describe_group(group).map_err(|e| e.to_string())?;
    let mut owners = BTreeMap::new();
    for m in &g.members {
        let Some((instance, url)) = parse_client_id(&m.client_id) else { continue };
        for (t, p) in &m.assignment {
            if t == topic {
                owners.insert(*p, Owner { instance: instance.into(), url: url.into() });
            }
        }
    }
    Ok(Routing { partitions, owners, fetched: Instant::now() })
}

/// Which partitions an answer is for: `scope=local&partitions=0,3` (this instance's own
/// state only, as forwarded by another instance), or everything (fan out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `Some`: answer only these partitions, from this instance's state.
    pub local: Option<Vec<i32>>,
}

impl Scope {
    /// From the `scope` and `partitions` query parameters: `Err((field, rule, message))`.
    pub fn parse(
        scope: Option<&str>,
        partitions: Option<&str>,
    ) -> Result<Scope, (&'static str, &'static str, String)> {
        match (scope, partitions) {
            (None, None) => Ok(Scope::default()),
            (Some("local"), Some(list)) => {
                let parsed: Result<Vec<i32>, _> =
                    list.split(',').map(|p| p.trim().parse::<i32>()).collect();
                match parsed {
                    Ok(ps)
                        if !ps.is_empty() && ps.len() <= 10_000 && ps.iter().all(|p| *p >= 0) =>
                    {
                        Ok(Scope { local: Some(ps) })
                    }
                    _ => Err((
                        PARTITIONS_PARAM,
                        "partitions.format",
                        "partitions must be 1..=10000 comma-separated partition numbers".into(),
                    )),
                }
            }
            (Some("local"), None) => Err((
                PARTITIONS_PARAM,
                "partitions.required",
                "scope=local needs partitions=…".into(),
            )),
            (Some(_), _) => {
                Err((SCOPE_PARAM, "scope.value", "scope must be `local` (or absent)".into()))
            }
            (None, Some(_)) => Err((
                PARTITIONS_PARAM,
                "partitions.scope",
                "partitions=… is only accepted with scope=local".into(),
            )),
        }
    }
}

/// What a stage's partial answers are: merged from several instances into one.
pub trait Part: Serialize + DeserializeOwned + Send + 'static {
    /// Adds `other` (an answer for other partitions) to `self`.
    fn merge(&mut self, other: Self);
}

/// One instance's answer for some partitions (what `scope=local` returns).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Local<P> {
    pub instance: String,
    /// Partitions answered (asked for, owned and restored here).
    pub answered: Vec<i32>,
    /// Partitions asked for that are being restored here.
    pub restoring: Vec<i32>,
    pub part: P,
}

/// Which instances and partitions an answer covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Every partition asked for was answered.
    pub complete: bool,
    /// Partitions asked for.
    pub partitions: Vec<i32>,
    /// Per instance, the partitions it answered.
    pub instances: BTreeMap<String, Vec<i32>>,
    /// Partitions nobody answered before the deadline.
    pub missing: Vec<i32>,
    /// Of those, the ones an owner said it was restoring.
    pub restoring: Vec<i32>,
}

/// Answers questions for any partition of the stage's input.
#[derive(Debug)]
pub struct Plane {
    directory: Directory,
    instance: String,
    token: Option<OperatorToken>,
    http: reqwest::Client,
}

impl Plane {
    /// The plane of instance `instance`; forwarded requests carry `token`.
    pub fn new(directory: Directory, instance: &str, token: Option<OperatorToken>) -> Plane {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(FORWARD_TIMEOUT)
            .build()
            .unwrap_or_default();
        Plane { directory, instance: instance.to_string(), token, http }
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The number of input partitions.
    pub async fn partitions(&self) -> Result<i32, QueryError> {
        self.directory.routing(false).await.map(|r| r.partitions).map_err(QueryError::Plane)
    }

    /// Every input partition (a question about all of them: a scan, a city view).
    pub async fn all_partitions(&self) -> Result<BTreeSet<i32>, QueryError> {
        self.partitions().await.map(|n| (0..n).collect())
    }

    /// Gathers the answer for `needed` partitions: `local(ps)` asks this instance's loop
    /// for `ps`; the other owners get `GET <their url><path_and_query>&scope=local&…`
    /// (`path_and_query` already holds a `?`). Retries partitions that are restoring or
    /// moving until [`DEADLINE`]; `empty` is the answer for no partition.
    pub async fn gather<P, F, Fut>(
        &self,
        needed: BTreeSet<i32>,
        path_and_query: &str,
        empty: P,
        local: F,
    ) -> Result<(P, Coverage), QueryError>
    where
        P: Part,
        F: Fn(Vec<i32>) -> Fut,
        Fut: Future<Output = Result<Local<P>, QueryError>>,
    {
        let started = Instant::now();
        let mut coverage =
            Coverage { partitions: needed.iter().copied().collect(), ..Coverage::default() };
        let mut missing = needed;
        let mut acc = empty;
        let mut restoring = BTreeSet::new();
        let mut round = 0u32;
        while !missing.is_empty() {
            restoring.clear();
            let mine = local(missing.iter().copied().collect()).await?;
            take(&mut acc, &mut coverage, &mut missing, &mut restoring, mine);
            if missing.is_empty() {
                break;
            }
            let routing = self.directory.routing(round > 0).await.map_err(QueryError::Plane)?;
            let mut asks: BTreeMap<&Owner, Vec<i32>> = BTreeMap::new();
            for p in &missing {
                if let Some(o) = routing.owners.get(p).filter(|o| o.instance != self.instance) {
                    asks.entry(o).or_default().push(*p);
                }
            }
            let answers = futures::future::join_all(
                asks.iter().map(|(o, ps)| self.forward::<P>(o, ps, path_and_query)),
            )
            .await;
            for a in answers.into_iter().flatten() {
                take(&mut acc, &mut coverage, &mut missing, &mut restoring, a);
            }
            if missing.is_empty() || started.elapsed() + RETRY_PAUSE >= DEADLINE {
                break;
            }
            round += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        coverage.complete = missing.is_empty();
        coverage.missing = missing.into_iter().collect();
        coverage.restoring = restoring.into_iter().collect();
        Ok((acc, coverage))
    }

    async fn forward<P: Part>(
        &self,
        owner: &Owner,
        ps: &[i32],
        path_and_query: &str,
    ) -> Option<Local<P>> {
        let list: Vec<String> = ps.iter().map(i32::to_string).collect();
        let url = format!(
            "{}{path_and_query}&{SCOPE_PARAM}=local&{PARTITIONS_PARAM}={}",
            owner.url.trim_end_matches('/'),
            list.join(",")
        );
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.header(reqwest::header::AUTHORIZATION, t.bearer());
        }
        let answer = async { req.send().await?.error_for_status()?.json::<Local<P>>().await };
        match answer.await {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::debug!(instance = owner.instance, error = %e, "forwarded query failed");
                None
            }
        }
    }
}

fn take<P: Part>(
    acc: &mut P,
    coverage: &mut Coverage,
    missing: &mut BTreeSet<i32>,
    restoring: &mut BTreeSet<i32>,
    answer: Local<P>,
) {
    // Only partitions still missing count: an answer never counts a partition twice.
    let fresh: Vec<i32> = answer.answered.iter().copied().filter(|p| missing.contains(p)).collect();
    if fresh.len() != answer.answered.len() {
        tracing::warn!(instance = answer.instance, "an answer repeated partitions; dropped it");
        return;
    }
    restoring.extend(answer.restoring.iter().copied().filter(|p| missing.contains(p)));
    for p in &fresh {
        missing.remove(p);
    }
    if !fresh.is_empty() {
        coverage.instances.entry(answer.instance).or_default().extend(fresh);
        acc.merge(answer.part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_carries_instance_and_address() {
        let id = member_client_id("aggregator", "aggregator-1", "http://10.0.0.7:8081");
        assert_eq!(parse_client_id(&id), Some(("aggregator-1", "http://10.0.0.7:8081")));
        assert_eq!(parse_client_id("rdkafka"), None);
        assert_eq!(parse_client_id("nearfield-aggregator;a;ftp://x"), None);
    }

    #[test]
    fn scope_is_all_or_local_partitions() {
        assert_eq!(Scope::parse(None, None), Ok(Scope::default()));
        assert_eq!(Scope::parse(Some("local"), Some("0,3")), Ok(Scope { local: Some(vec![0, 3]) }));
        for (s, p, field) in [
            (Some("local"), None, PARTITIONS_PARAM),
            (Some("local"), Some("x"), PARTITIONS_PARAM),
            (Some("local"), Some("-1"), PARTITIONS_PARAM),
            (Some("all"), Some("1"), SCOPE_PARAM),
            (None, Some("1"), PARTITIONS_PARAM),
        ] {
            assert_eq!(Scope::parse(s, p).map_err(|e| e.0), Err(field), "{s:?} {p:?}");
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    struct Sum(i64);

    impl Part for Sum {
        fn merge(&mut self, other: Self) {
            self.0 += other.0;
        }
    }

    #[test]
    fn a_partition_answered_twice_is_not_counted_twice() {
        let (mut acc, mut cov) = (Sum(0), Coverage::default());
        let mut missing: BTreeSet<i32> = [0, 1, 2].into();
        let mut restoring = BTreeSet::new();
        let a = |answered: Vec<i32>, restoring: Vec<i32>, n| Local {
            instance: "a".into(),
            answered,
            restoring,
            part: Sum(n),
        };
        take(&mut acc, &mut cov, &mut missing, &mut restoring, a(vec![0], vec![2], 5));
        take(&mut acc, &mut cov, &mut missing, &mut restoring, a(vec![0, 1], vec![], 7));
        take(&mut acc, &mut cov, &mut missing, &mut restoring, a(vec![1], vec![], 3));
        assert_eq!(acc, Sum(8));
        assert_eq!(missing, [2].into());
        assert_eq!(restoring, [2].into());
        assert_eq!(cov.instances["a"], vec![0, 1]);
    }
}
