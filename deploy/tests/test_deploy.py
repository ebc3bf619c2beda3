"""Structural checks of deploy/ (no Kubernetes schema validator can fetch its schemas
here): every workload has probes, resources, a non-root user and a disruption budget;
autoscaling never exceeds the partitions; every metric the alert rules and the dashboard
use is one a stage declares; the compose file wires the same image to every stage.
Run by `make test` (with promtool's own checks of the rules)."""
import glob
import json
import os
import re
import sys

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
        suffixes = re.findall(r'pub const [A-Z_]+: &str = "((?!nearfield_)[a-z0-9_]+)";', f.read())
    assert suffixes, "eos/src/internal_events.rs declares the runtime's metric suffixes"
    stages = ("aggregator", "emitter", "repartition")
    names |= {f"nearfield_{stage}_{s}" for stage in stages for s in suffixes}
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
        assert svc["image"] == "${NEARFIELD_IMAGE:-localhost/nearfield:latest}", name
        assert svc["command"][0] in SUBCOMMANDS, name
    assert os.path.isfile(os.path.join(DEPLOY, "prometheus", "prometheus.yml"))
    assert os.path.isfile(os.path.join(DEPLOY, "Dockerfile"))


def _selects(selector, labels):
    """Whether a Kubernetes label selector selects pods with `labels`."""
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions", []):
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
    return True


def test_network_policies_deny_by_default_and_open_only_what_each_stage_serves():
    docs = manifests()
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and "ingress" not in p["spec"] and "egress" not in p["spec"]]
    assert deny, "a default-deny policy over every nearfield pod"
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    for name, w in workloads.items():
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert any(_selects(p["spec"]["podSelector"], labels) for p in deny), name
        port = w["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        rules = [r for p in policies if _selects(p["spec"]["podSelector"], labels)
                 for r in p["spec"].get("ingress", [])]
        assert any(port in [x["port"] for x in r.get("ports", [])] for r in rules), f"{name}: port {port} reachable by someone"
        for r in rules:
            if "from" not in r:
                # Open to anyone: only the device-facing ingest, and only its device port
                # (metrics are on the operator port, for monitoring and the live page).
                assert name == "nearfield-ingest", f"{name} is open to every source"
                assert [x["port"] for x in r["ports"]] == [8080], f"{name}: {r['ports']} open to all"


def test_containers_drop_every_capability_under_the_default_seccomp_profile():
    for w in (d for d in manifests() if d["kind"] in ("Deployment", "StatefulSet")):
        spec = w["spec"]["template"]["spec"]
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]


def test_no_default_credentials_in_compose_or_the_image():
    with open(os.path.join(DEPLOY, "compose.yaml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${"), "no default Grafana password"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    env = compose["x-nearfield"]["environment"]
    assert env["NEARFIELD_INGEST__MASTER_KEY"].startswith("${"), "the master key comes from the operator"
    with open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8") as f:
        dockerfile = f.read()
    assert "sed -i '/^master_key *=/d' /etc/nearfield/nearfield.toml" in dockerfile, "the image holds no key"
    with open(os.path.join(DEPLOY, "..", "scripts", "image.sh"), encoding="utf-8") as f:
        script = f.read()
    needle = "sed -i '/^master_key *=/d' \"$ctx/examples/nearfield.toml\""
    assert needle in script, "the image make image builds holds no key either"


def test_kubernetes_runs_the_image_make_image_builds():
    for d in manifests():
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c["image"] == "localhost/nearfield:latest", d["metadata"]["name"]


def test_each_stage_connects_to_kafka_as_its_own_principal_from_a_secret():
    docs = manifests()
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for d in docs:
        if d["kind"] == "ConfigMap":
            for key in d.get("data", {}):
                assert "PASSWORD" not in key and "MASTER_KEY" not in key, f"{key} in a ConfigMap"
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    for name, stage in [("nearfield-ingest", "ingest"), ("nearfield-aggregator", "aggregate"),
                        ("nearfield-emitter", "emit")]:
        refs = [e["secretRef"]["name"] for e in
                workloads[name]["spec"]["template"]["spec"]["containers"][0]["envFrom"] if "secretRef" in e]
        own = f"nearfield-kafka-{stage}"
        assert own in refs, f"{name} reads its Kafka credentials from {own}"
        data = secrets[own]["stringData"]
        assert data["NEARFIELD_KAFKA_PROPERTY_SASL_USERNAME"] == f"nearfield-{stage}", own
        # Only the principal `nearfield access grant-stage` makes for it.
        others = [r for r in refs if r.startswith("nearfield-kafka-") and r != own]
        assert not others, f"{name} also reads {others}"


def test_readers_query_every_replica_and_replicas_reach_each_other():
    docs = manifests()
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    live_env = {e["name"]: e.get("value") for e in
                workloads["nearfield-live"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, section, port in [("nearfield-aggregator", "AGGREGATE", 8081),
                                ("nearfield-emitter", "EMIT", 8082)]:
        query = services[f"{name}-query"]["spec"]
        assert query.get("clusterIP") != "None", "a Service over every replica, not a pod"
        assert query["selector"] == {"app.kubernetes.io/name": name}
        reader = "AGGREGATOR" if section == "AGGREGATE" else "EMITTER"
        assert live_env[f"NEARFIELD_LIVE__{reader}_URL"] == f"http://{name}-query:{port}"
        env = {e["name"]: e.get("value") for e in
               workloads[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env[f"NEARFIELD_{section}__ADVERTISED_URL"] == f"http://$(POD_NAME).{name}:{port}"
        assert services[name]["spec"]["clusterIP"] == "None", "pods resolvable by name"
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"
                    and _selects(d["spec"]["podSelector"], {"app.kubernetes.io/name": name})]
        peers = [rule for p in policies for rule in p["spec"].get("ingress", [])
                 if any(_selects(f.get("podSelector", {}), {"app.kubernetes.io/name": name})
                        and "namespaceSelector" not in f for f in rule.get("from", []))
                 and {"port": port, "protocol": "TCP"} in rule.get("ports", [])]
        assert peers, f"{name} replicas may forward queries to each other"


# Kinds whose schema Kubernetes does not ship (custom resources): checked structurally above.
CUSTOM_RESOURCES = {"keda.sh/v1alpha1"}


def test_every_manifest_validates_against_kubernetes_own_schemas():
    import kubernetes_validate

    docs = manifests()
    checked = 0
    for version in ("1.30.0", "1.37.0"):
        for d in docs:
            if d["apiVersion"] in CUSTOM_RESOURCES:
                continue
            # strict: an unknown or misspelt field fails too
            kubernetes_validate.validate(d, version, strict=True)
            checked += 1
    assert checked >= 2 * 20, checked


def test_a_misspelt_field_fails_the_schema_check():
    import kubernetes_validate
    import pytest

    d = next(d for d in manifests() if d["kind"] == "StatefulSet")
    bad = json.loads(json.dumps(d))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.37.0", strict=True)


def test_compose_file_passes_podmans_config_check():
    import shutil
    import subprocess

    exe = shutil.which("podman-compose", path=os.path.dirname(os.path.abspath(sys.executable)))
    assert exe, "podman-compose is installed in the venv by scripts/bootstrap.sh"
    env = dict(os.environ, NEARFIELD_OPERATOR_TOKEN="operator-token-for-the-check",
               NEARFIELD_MASTER_KEY="0" * 64, GRAFANA_ADMIN_PASSWORD="check")
    out = subprocess.run([exe, "-f", os.path.join(DEPLOY, "compose.yaml"), "config"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert {"kafka", "ingest", "aggregator", "emitter", "live"} <= set(config["services"])
    # Without the operator's secrets the compose file refuses to run (no defaults).
    bare = {k: v for k, v in env.items() if k != "NEARFIELD_MASTER_KEY"}
    out = subprocess.run([exe, "-f", os.path.join(DEPLOY, "compose.yaml"), "config"], env=bare,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "NEARFIELD_MASTER_KEY" in out.stderr, out.stderr
