"""Structural checks of deploy/ (no Kubernetes schema validator can fetch its schemas
here): every workload has probes, resources, a non-root user and a disruption budget;
autoscaling never exceeds the partitions; every metric the alert rules and the dashboard
use is one a stage declares; the compose file wires the same image to every stage.
Run by `make test` (with promtool's own checks of the rules)."""
import glob
import json
import os
import re

import yaml

DEPLOY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(DEPLOY)
SUBCOMMANDS = {"ingest", "aggregate", "emit", "live", "run", "simulate", "replay", "topics"}


def manifests():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "kubernetes", "*.yaml"))):
        if path.endswith("kustomization.yaml"):
            continue
        with open(path, encoding="utf-8") as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def declared_metrics():
    names = set()
    for path in glob.glob(os.path.join(ROOT, "*", "src", "internal_events.rs")):
        with open(path, encoding="utf-8") as f:
            names |= set(re.findall(r'"(nearfield_[a-z0-9_]+)"', f.read()))
    # The exactly-once runtime declares suffixes; every stage on it has each of them.
    with open(os.path.join(ROOT, "eos", "src", "internal_events.rs"), encoding="utf-8") as f:
        suffixes = re.findall(r'pub const [A-Z_]+: &str = "([a-z0-9_]+)";', f.read())
    assert suffixes, "eos/src/internal_events.rs declares the runtime's metric suffixes"
    names |= {f"nearfield_{stage}_{s}" for stage in ("aggregator", "emitter") for s in suffixes}
    return names


def used_metrics(text):
    used = set(re.findall(r"nearfield_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}


def test_kustomization_lists_every_manifest():
    with open(os.path.join(DEPLOY, "kubernetes", "kustomization.yaml"), encoding="utf-8") as f:
        listed = set(yaml.safe_load(f)["resources"])
    files = {os.path.basename(p) for p in glob.glob(os.path.join(DEPLOY, "kubernetes", "*.yaml"))}
    assert listed == files - {"kustomization.yaml"}


def test_every_workload_is_probed_bounded_and_unprivileged():
    docs = manifests()
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert {w["metadata"]["name"] for w in workloads} == {
        "nearfield-ingest", "nearfield-aggregator", "nearfield-emitter", "nearfield-live"}
    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, w["metadata"]["name"]
        for c in spec["containers"]:
            name = f'{w["metadata"]["name"]}/{c["name"]}'
            assert c["args"][0] in SUBCOMMANDS, name
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert "cpu" in c["resources"]["requests"] and "memory" in c["resources"]["limits"], name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            for ref in c.get("envFrom", []):
                kind, ref_name = next(iter(ref.items()))
                want = "ConfigMap" if kind == "configMapRef" else "Secret"
                assert any(d["kind"] == want and d["metadata"]["name"] == ref_name["name"] for d in docs), name
    budgets = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert {"nearfield-ingest", "nearfield-aggregator", "nearfield-emitter"} <= budgets


def test_consumer_groups_scale_on_lag_and_never_beyond_partitions():
    docs = manifests()
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    partitions = int(config["data"]["NEARFIELD_KAFKA__PARTITIONS"])
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert set(scaled) == {"nearfield-aggregator", "nearfield-emitter"}
    for name, so in scaled.items():
        assert so["spec"]["maxReplicaCount"] <= partitions, name
        trigger = so["spec"]["triggers"][0]
        assert trigger["type"] == "kafka" and int(trigger["metadata"]["lagThreshold"]) > 0
        target = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == name)
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        # Stable identity: the pod name is the instance id (transactional.id).
        assert args[args.index("--instance-id") + 1] == "$(POD_NAME)"


def test_alerts_and_dashboard_use_declared_metrics_and_runbooks_exist():
    declared = declared_metrics()
    assert len(declared) > 40
    with open(os.path.join(DEPLOY, "prometheus", "rules.yml"), encoding="utf-8") as f:
        rules_text = f.read()
    with open(os.path.join(DEPLOY, "grafana", "dashboards", "nearfield.json"), encoding="utf-8") as f:
        dash_text = f.read()
    json.loads(dash_text)
    for text, what in [(rules_text, "rules"), (dash_text, "dashboard")]:
        unknown = used_metrics(text) - declared - {"nearfield_aggregator", "nearfield_emitter"}
        assert not unknown, f"{what} use undeclared metrics: {unknown}"
    with open(os.path.join(ROOT, "docs", "operations.md"), encoding="utf-8") as f:
        runbook = f.read()
    for alert in re.findall(r"alert: (\w+)", rules_text):
        assert f"### {alert}" in runbook, f"{alert} has no runbook entry"


def test_compose_runs_one_image_for_every_stage():
    with open(os.path.join(DEPLOY, "compose.yaml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    for name in ["topics", "ingest", "aggregator", "emitter", "live", "simulate"]:
        svc = services[name]
        assert svc["image"] == "nearfield:latest", name
        assert svc["command"][0] in SUBCOMMANDS, name
    assert os.path.isfile(os.path.join(DEPLOY, "prometheus", "prometheus.yml"))
    assert os.path.isfile(os.path.join(DEPLOY, "Dockerfile"))
