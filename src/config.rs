//! The deployment configuration: one file for every stage, layered as
//! defaults < file (`--config FILE`) < environment (`NEARFIELD_<SECTION>__<KEY>`, and
//! `NEARFIELD_BROKERS` for `kafka.brokers`, `NEARFIELD_KAFKA_PROPERTY_<NAME>` for a
//! librdkafka property, `_` standing for `.`) < command-line flags. Unknown keys are errors
//! that name the key; relative paths in the file are relative to the file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use nearfield_aggregator::AggregateConfig;
use nearfield_common::kafka::KafkaSettings;
use nearfield_common::operator::{OperatorToken, SupplierTokens};
use nearfield_emitter::EmitConfig;
use nearfield_eos::repartition::RepartitionConfig;
use nearfield_ingest::IngestConfig;
use nearfield_live::LiveConfig;
use nearfield_simulator::SimulateConfig;
use serde::{Deserialize, Serialize};

/// Every section of the deployment file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaSettings,
    pub ingest: IngestConfig,
    pub aggregate: AggregateConfig,
    pub emit: EmitConfig,
    pub live: LiveConfig,
    pub simulate: SimulateConfig,
    pub operator: OperatorConfig,
    pub repartition: RepartitionConfig,
}

/// `[operator]`: the token the query and admin endpoints of the aggregator, the emitter
/// and the live page require (SPEC §8); `NEARFIELD_OPERATOR_TOKEN` takes precedence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// A file holding the token (e.g. a mounted Kubernetes Secret).
    pub token_file: Option<PathBuf>,
    /// A file of `<supplier_id> <token>` lines: each supplier's own token for the
    /// emitter's `/v1/plans`, which then shows that supplier's plans only. Needs the
    /// operator token.
    pub supplier_tokens_file: Option<PathBuf>,
}

fn resolve(base: &Path, p: &mut Option<PathBuf>) {
    if let Some(path) = p
        && path.is_relative()
    {
        *path = base.join(&*path);
    }
}

fn extract(fig: &Figment) -> anyhow::Result<Config> {
    fig.extract().map_err(|e| {
        let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
    })
}

/// What a configuration file alone says (the defaults, then the file), with no
/// environment: `access revoke-stage --retired` reads the retired deployment's names so,
/// since the shell's `NEARFIELD_*` variables are the current deployment's. The caller
/// names the file in its errors.
pub fn load_file_alone(path: &Path) -> anyhow::Result<Config> {
    anyhow::ensure!(path.is_file(), "no such file");
    extract(&Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(path)))
}

/// Loads the configuration.
pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        anyhow::ensure!(path.is_file(), "--config {}: no such file", path.display());
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed("NEARFIELD_").filter(|k| k.as_str().contains("__")).split("__"));
    if let Ok(brokers) = std::env::var("NEARFIELD_BROKERS")
        && !brokers.trim().is_empty()
    {
        fig = fig.merge(("kafka.brokers", brokers.trim().to_string()));
    }
    let mut cfg = extract(&fig)?;
    // librdkafka property names hold dots, which figment would read as nesting; they come
    // from `NEARFIELD_KAFKA_PROPERTY_SASL_PASSWORD` → `sasl.password` instead.
    cfg.kafka.properties.extend(nearfield_common::kafka::env_properties());
    if let Some(dir) = file.and_then(Path::parent) {
        resolve(dir, &mut cfg.operator.token_file);
        resolve(dir, &mut cfg.operator.supplier_tokens_file);
        resolve(dir, &mut cfg.ingest.stores_file);
        resolve(dir, &mut cfg.ingest.catalog_file);
        resolve(dir, &mut cfg.ingest.master_key_file);
        resolve(dir, &mut cfg.simulate.stores_file);
        resolve(dir, &mut cfg.aggregate.stores_file);
        resolve(dir, &mut cfg.emit.catalog_file);
        resolve(dir, &mut cfg.live.catalog_file);
    }
    // The simulator plays the devices of this deployment unless told otherwise.
    if cfg.simulate.stores_file.is_none() {
        cfg.simulate.stores_file.clone_from(&cfg.ingest.stores_file);
    }
    if cfg.simulate.master_key.is_none() {
        cfg.simulate.master_key = match (&cfg.ingest.master_key, &cfg.ingest.master_key_file) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            ),
            (None, None) => None,
        };
    }
    // The aggregator counts the same registry's stores per grid.
    if cfg.aggregate.stores_file.is_none() {
        cfg.aggregate.stores_file.clone_from(&cfg.ingest.stores_file);
    }
    // Ingest accepts no event older than the aggregator's horizon: none of its windows
    // would count it (a 422 naming occurred_at, not an ack for an event lost to lateness).
    if cfg.ingest.limits.max_event_age_ms.is_none() {
        cfg.ingest.limits.max_event_age_ms = Some(cfg.aggregate.windowing().max_event_age());
    }
    if cfg.aggregate.h3_resolution.is_none() {
        cfg.aggregate.h3_resolution = Some(cfg.ingest.h3_resolution);
    }
    // One operator token for every query endpoint, and for the live page's own calls.
    let token = match (std::env::var("NEARFIELD_OPERATOR_TOKEN"), &cfg.operator.token_file) {
        (Ok(t), _) if !t.trim().is_empty() => Some(t),
        (_, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("operator.token_file {}", f.display()))?,
        ),
        _ => None,
    };
    let token = token
        .map(|t| OperatorToken::new(&t))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e} (NEARFIELD_OPERATOR_TOKEN or operator.token_file)"))?;
    if let Some(f) = &cfg.operator.supplier_tokens_file {
        anyhow::ensure!(
            token.is_some(),
            "operator.supplier_tokens_file needs the operator token too \
             (NEARFIELD_OPERATOR_TOKEN or operator.token_file)"
        );
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("operator.supplier_tokens_file {}", f.display()))?;
        cfg.emit.exactly_once.supplier_tokens = SupplierTokens::parse(&text)
            .map_err(|e| anyhow::anyhow!("operator.supplier_tokens_file {}: {e}", f.display()))?;
    }
    cfg.aggregate.exactly_once.operator_token.clone_from(&token);
    cfg.emit.exactly_once.operator_token.clone_from(&token);
    cfg.repartition.exactly_once.operator_token.clone_from(&token);
    cfg.live.operator_token = token;
    // Ingest refuses SKUs that are not in the emitter's catalog.
    if cfg.ingest.catalog_file.is_none() {
        cfg.ingest.catalog_file.clone_from(&cfg.emit.catalog_file);
    }
    // The live page's categories come from the emitter's catalog.
    if cfg.live.catalog_file.is_none() {
        cfg.live.catalog_file.clone_from(&cfg.emit.catalog_file);
    }
    if cfg.simulate.h3_resolution.is_none() {
        cfg.simulate.h3_resolution = Some(cfg.ingest.h3_resolution);
    }
    Ok(cfg)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn the_example_deployment_file_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/nearfield.toml");
        // Inside a jail: no other test's environment leaks in.
        let mut loaded = None;
        figment::Jail::expect_with(|_| {
            loaded = Some(load(Some(&path)).map_err(|e| e.to_string())?);
            Ok(())
        });
        let cfg = loaded.expect("example config loads");
        cfg.ingest.validate().expect("ingest settings valid");
        cfg.simulate.validate().expect("simulate settings valid");
        cfg.aggregate.validate().expect("aggregate settings valid");
        cfg.emit.validate().expect("emit settings valid");
        cfg.live.validate().expect("live settings valid");
        assert!(
            cfg.emit.catalog_file.as_ref().is_some_and(|p| p.is_file()),
            "catalog file resolved next to the config"
        );
        assert_eq!(cfg.aggregate.stores_file, cfg.ingest.stores_file);
        assert!(
            cfg.ingest.stores_file.as_ref().is_some_and(|p| p.is_file()),
            "stores file resolved next to the config"
        );
        assert_eq!(cfg.simulate.master_key, cfg.ingest.master_key);
        // Ingest's horizon is the aggregator's: the day window, its grace and 48 h of
        // lateness, out-of-orderness and the close delay.
        assert_eq!(
            cfg.ingest.limits.max_event_age_ms,
            Some(86_400_000 + 10_000 + 172_800_000 + 30_000 + 120_000)
        );
        assert_eq!(
            cfg.ingest.limits.max_event_age_ms,
            Some(nearfield_ingest::config::DEFAULT_MAX_EVENT_AGE_MS)
        );
    }

    #[test]
    fn environment_overrides_the_file_and_names_bad_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/nearfield.toml");
        figment::Jail::expect_with(|jail| {
            jail.set_env("NEARFIELD_INGEST__LISTEN", "0.0.0.0:9999");
            jail.set_env("NEARFIELD_INGEST__RATE_LIMIT__BURST", "7.0");
            jail.set_env("NEARFIELD_BROKERS", "b1:9092,b2:9092");
            jail.set_env("NEARFIELD_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL");
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.ingest.listen.to_string(), "0.0.0.0:9999");
            assert_eq!(cfg.ingest.rate_limit.burst, 7.0);
            assert_eq!(cfg.ingest.h3_resolution, 8, "file values stay where env is silent");
            assert_eq!(cfg.kafka.brokers, "b1:9092,b2:9092");
            assert_eq!(
                cfg.kafka.properties.get("security.protocol").map(String::as_str),
                Some("SASL_SSL")
            );
            jail.set_env("NEARFIELD_INGEST__H3_RESOLUTION", "eight");
            let err = load(Some(&path)).expect_err("not a number").to_string();
            assert!(err.contains("H3_RESOLUTION"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_handover_bound_comes_from_the_environment_of_a_rolling_restart() {
        // SCALING § Growing restarts the old emitters with this variable, not a new file.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/nearfield.toml");
        figment::Jail::expect_with(|jail| {
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.emit.horizons_before_ms, None, "unset: no bound");
            let t = 20_450 * cfg.emit.horizon_ms;
            jail.set_env("NEARFIELD_EMIT__HORIZONS_BEFORE_MS", t.to_string());
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.emit.horizons_before_ms, Some(t));
            assert_eq!(cfg.emit.horizons_from_ms, None);
            cfg.emit.validate().map_err(|e| e.to_string())?;
            jail.set_env("NEARFIELD_EMIT__HORIZONS_BEFORE_MS", (t + 5).to_string());
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            let err = cfg.emit.validate().expect_err("not a horizon start").to_string();
            assert!(err.starts_with("emit.horizons_before_ms: must be a horizon start"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_retired_file_is_read_without_the_current_environment() {
        // `revoke-stage --retired v1.toml` is run in the shell of the v2 deployment: a
        // variable renaming a topic there must not rename it in the retired file too.
        figment::Jail::expect_with(|jail| {
            jail.create_file("v1.toml", "[kafka.topics]\nsales = \"sales.v1\"\n")?;
            let v1 = jail.directory().join("v1.toml");
            jail.set_env("NEARFIELD_KAFKA__TOPICS__SALES", "sales.v2");
            let current = load(Some(&v1)).map_err(|e| e.to_string())?;
            assert_eq!(current.kafka.topics.sales, "sales.v2");
            let retired = load_file_alone(&v1).map_err(|e| e.to_string())?;
            assert_eq!(retired.kafka.topics.sales, "sales.v1");
            assert_eq!(retired.kafka.topics.demand, Config::default().kafka.topics.demand);
            let missing = jail.directory().join("v0.toml");
            let err = load_file_alone(&missing).expect_err("no file").to_string();
            assert_eq!(err, "no such file");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[ingest]\nlisten_port = 1\n").expect("write");
        let mut err = String::new();
        figment::Jail::expect_with(|_| {
            err = load(Some(&path)).expect_err("unknown key").to_string();
            Ok(())
        });
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn one_operator_token_reaches_every_query_endpoint() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("token", "from-the-file-0123456789\n")?;
            jail.create_file("c.toml", "[operator]\ntoken_file = \"token\"\n")?;
            let path = jail.directory().join("c.toml");
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            let want = OperatorToken::new("from-the-file-0123456789").ok();
            assert_eq!(cfg.aggregate.exactly_once.operator_token, want);
            assert_eq!(cfg.emit.exactly_once.operator_token, want);
            assert_eq!(cfg.live.operator_token, want);
            jail.set_env("NEARFIELD_OPERATOR_TOKEN", "from-the-environment-99");
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.live.operator_token, OperatorToken::new("from-the-environment-99").ok());
            jail.set_env("NEARFIELD_OPERATOR_TOKEN", "short");
            let err = load(Some(&path)).expect_err("too short").to_string();
            assert!(err.contains("at least 16 bytes"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn supplier_tokens_reach_the_emitter_and_need_the_operator_token() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("suppliers", "bright-dairy token-of-bright-dairy-01\n")?;
            jail.create_file("c.toml", "[operator]\nsupplier_tokens_file = \"suppliers\"\n")?;
            let path = jail.directory().join("c.toml");
            let err = load(Some(&path)).expect_err("no operator token").to_string();
            assert!(err.contains("needs the operator token"), "{err}");
            jail.set_env("NEARFIELD_OPERATOR_TOKEN", "operator-token-0123456789");
            let cfg = load(Some(&path)).map_err(|e| e.to_string())?;
            let want = SupplierTokens::parse("bright-dairy token-of-bright-dairy-01").ok();
            assert_eq!(Some(cfg.emit.exactly_once.supplier_tokens), want);
            assert!(cfg.aggregate.exactly_once.supplier_tokens.is_empty(), "plans only");
            jail.create_file("suppliers", "bright-dairy short\n")?;
            let err = load(Some(&path)).expect_err("short token").to_string();
            assert!(err.contains("supplier_tokens_file") && err.contains("line 1"), "{err}");
            Ok(())
        });
    }
}
