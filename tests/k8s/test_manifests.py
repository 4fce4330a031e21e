"""The Kubernetes manifests: every overlay renders with the real kustomize, every object validates
against the Kubernetes schemas of one stated version, and the rules of the deployment hold (security
context, probes, resources, grace periods, network policies, autoscaling, topics, no secrets).

kustomize is installed on first use by tests/k8s/tools.py; the schemas come from the
kubernetes-validate package. CRDs (Strimzi KafkaTopic, KEDA ScaledObject) have no schema there and
get structural checks instead.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from services.core.domain import events
from tests.k8s import tools

# The first test may build kustomize (go install): allow it more than the suite's default timeout.
pytestmark = pytest.mark.timeout(tools.INSTALL_TIMEOUT_S + 300)

K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests target (preStop sleep, matchLabelKeys)
DEPLOY = tools.REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")

# docs/contract.md#kafka: every topic and its dead-letter topic.
TOPICS = (
    "crm.directory.v1",
    "mailsync.notifications.v1",
    "mailsync.lifecycle.v1",
    "mailsync.engagements.v1",
    "mailsync.connection-status.v1",
    "mailsync.notices.v1",
    "mailsync.sends.v1",
)
ALL_TOPICS = frozenset(TOPICS + tuple(f"{t}.dlq" for t in TOPICS))

SERVICES = {  # Deployment -> (HTTP port, the least termination grace period it needs)
    "mailsync-subscriber": (8080, 30),
    "mailsync-matcher": (8081, 60),
    "mailsync-renewer": (8082, 60),
}
SECRET_NAME = "mailsync-secrets"
SECRET_KEYS = frozenset({"MAILSYNC_DATABASE_URL", "MAILSYNC_CLIENT_SECRET", "MAILSYNC_TOKEN_KEYS",
                         "MAILSYNC_API_TOKEN", "MAILSYNC_SESSION_SECRET"})
RUN_AS_USER = 10001

Obj = dict[str, Any]


# --- rendering -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kustomize() -> Path:
    try:
        return tools.kustomize()
    except tools.ToolError as exc:
        error = str(exc)
    pytest.fail(error, pytrace=False)


@functools.cache
def _render(overlay: str) -> tuple[Obj, ...]:
    try:
        output = tools.build(DEPLOY / "overlays" / overlay)
    except tools.ToolError as exc:
        error = str(exc)
    else:
        return tuple(doc for doc in yaml.safe_load_all(output) if doc)
    pytest.fail(error, pytrace=False)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, kustomize: Path) -> str:
    return str(request.param)


@pytest.fixture
def objects(overlay: str) -> tuple[Obj, ...]:
    return _render(overlay)


@pytest.fixture
def prod(kustomize: Path) -> tuple[Obj, ...]:
    return _render("prod")


@pytest.fixture
def dev(kustomize: Path) -> tuple[Obj, ...]:
    return _render("dev")


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def workloads(objects: tuple[Obj, ...]) -> Iterator[tuple[Obj, Obj]]:
    """(object, pod spec) for every Deployment and Job."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield obj, obj["spec"]["template"]["spec"]


def ident(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- rendering and schemas ----------------------------------------------------------------------

def test_overlay_renders_distinct_named_objects(objects: tuple[Obj, ...], overlay: str) -> None:
    assert objects, f"overlay {overlay} rendered nothing"
    keys = [(o.get("apiVersion"), o.get("kind"), o.get("metadata", {}).get("namespace"),
             o.get("metadata", {}).get("name")) for o in objects]
    assert all(all(k[i] for i in (0, 1, 3)) for k in keys), "an object lacks apiVersion, kind or name"
    assert len(keys) == len(set(keys)), "duplicate objects"
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert all(o["metadata"].get("namespace") for o in namespaced), "an object has no namespace"


def _check_kafka_topic(obj: Obj) -> list[str]:
    errors = []
    spec, meta = obj.get("spec", {}), obj["metadata"]
    if obj["apiVersion"] not in ("kafka.strimzi.io/v1", "kafka.strimzi.io/v1beta2"):
        errors.append(f"apiVersion {obj['apiVersion']}")
    if not meta.get("labels", {}).get("strimzi.io/cluster"):
        errors.append("no strimzi.io/cluster label (the Topic Operator ignores it)")
    if set(spec) - {"topicName", "partitions", "replicas", "config"}:
        errors.append(f"unknown spec fields {sorted(set(spec) - {'topicName', 'partitions', 'replicas', 'config'})}")
    for field in ("partitions", "replicas"):
        if not (isinstance(spec.get(field), int) and spec[field] >= 1):
            errors.append(f"spec.{field} must be a positive integer")
    config = spec.get("config", {})
    if not isinstance(config, dict) or not all(isinstance(v, (str, int, bool)) for v in config.values()):
        errors.append("spec.config must map names to scalars")
        return errors
    if config.get("cleanup.policy") not in ("delete", "compact", "compact,delete", "delete,compact"):
        errors.append(f"cleanup.policy {config.get('cleanup.policy')!r}")
    if "delete" in str(config.get("cleanup.policy")) and "retention.ms" not in config:
        errors.append("a deleting topic states its retention.ms")
    if not isinstance(spec.get("replicas"), int) or int(config.get("min.insync.replicas", 1)) > spec["replicas"]:
        errors.append("min.insync.replicas exceeds replicas: acks=all producers could never write")
    return errors


def _check_scaled_object(obj: Obj, objects: tuple[Obj, ...]) -> list[str]:
    errors = []
    spec = obj.get("spec", {})
    if obj["apiVersion"] != "keda.sh/v1alpha1":
        errors.append(f"apiVersion {obj['apiVersion']}")
    known = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
             "idleReplicaCount", "initialCooldownPeriod", "advanced", "fallback", "triggers"}
    if set(spec) - known:
        errors.append(f"unknown spec fields {sorted(set(spec) - known)}")
    target = spec.get("scaleTargetRef", {})
    if not any(o["kind"] == target.get("kind", "Deployment") and o["metadata"]["name"] == target.get("name")
               for o in objects):
        errors.append(f"scaleTargetRef {target} names no rendered object")
    if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0):
        errors.append("needs 1 <= minReplicaCount <= maxReplicaCount")
    triggers = spec.get("triggers") or []
    if not triggers:
        errors.append("no triggers")
    for trigger in triggers:
        metadata = trigger.get("metadata", {})
        if not trigger.get("type") or not isinstance(metadata, dict):
            errors.append(f"trigger {trigger} needs a type and metadata")
        elif not all(isinstance(v, str) for v in metadata.values()):  # KEDA: map[string]string
            errors.append(f"trigger metadata values must be strings: {metadata}")
    return errors


def test_every_object_validates_against_the_kubernetes_schemas(objects: tuple[Obj, ...]) -> None:
    errors = []
    for obj in objects:
        if obj["kind"] == "KafkaTopic":
            errors += [f"{ident(obj)}: {e}" for e in _check_kafka_topic(obj)]
            continue
        if obj["kind"] == "ScaledObject":
            errors += [f"{ident(obj)}: {e}" for e in _check_scaled_object(obj, objects)]
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kv_utils.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            errors.append(f"{ident(obj)}: {where}: {exc.message}")
        except kv_utils.SchemaNotFoundError as exc:
            errors.append(f"{ident(obj)}: {exc.message} (a wrong apiVersion, or a CRD without checks here)")
    assert not errors, f"invalid against Kubernetes {K8S_VERSION}:\n" + "\n".join(errors)


def test_references_between_objects_resolve(objects: tuple[Obj, ...]) -> None:
    by_kind: dict[str, set[str]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    pod_labels = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
                  for o in of_kind(objects, "Deployment")}

    def selects_a_deployment(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels.values())

    for service in of_kind(objects, "Service"):
        assert selects_a_deployment(service["spec"]["selector"]), f"{ident(service)} selects no pods"
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        assert selects_a_deployment(pdb["spec"]["selector"]["matchLabels"]), f"{ident(pdb)} selects no pods"
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in by_kind["Deployment"], ident(hpa)
    for ingress in of_kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] in by_kind["Service"], f"{ident(ingress)} {path}"
    for obj, pod in workloads(objects):
        assert pod["serviceAccountName"] in by_kind["ServiceAccount"], ident(obj)
        for container in pod["containers"]:
            refs = [e["valueFrom"] for e in container.get("env", []) if "valueFrom" in e]
            refs += container.get("envFrom", [])
            for ref in refs:
                if "configMapRef" in ref or "configMapKeyRef" in ref:
                    name = (ref.get("configMapRef") or ref["configMapKeyRef"])["name"]
                    assert name in by_kind["ConfigMap"], f"{ident(obj)} needs ConfigMap {name}"
                if "secretRef" in ref or "secretKeyRef" in ref:
                    name = (ref.get("secretRef") or ref["secretKeyRef"])["name"]
                    assert name == SECRET_NAME, f"{ident(obj)} reads Secret {name}, not {SECRET_NAME}"


# --- every workload -------------------------------------------------------------------------------

def test_every_container_is_locked_down_and_sized(objects: tuple[Obj, ...]) -> None:
    found = list(workloads(objects))
    assert {o["metadata"]["name"] for o, _ in found} >= {*SERVICES, "mailsync-migrate"}
    for obj, pod in found:
        where = ident(obj)
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod.get("automountServiceAccountToken") is False, where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{ident(obj)} container {container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("runAsUser") == RUN_AS_USER, f"{where}: not the image's user {RUN_AS_USER}"
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes.get(tmp[0]["name"], {}), f"{where}: no emptyDir at /tmp"
            image = container["image"]
            assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], f"{where}: untagged image {image}"


def test_every_deployment_has_probes_and_a_grace_period_for_its_work(objects: tuple[Obj, ...]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    assert set(deployments) == set(SERVICES)
    for name, (port, grace) in SERVICES.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port in ports.values(), f"{name} does not expose {port}"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("MAILSYNC_HTTP_PORT") == str(port), f"{name} listens on a port its probes do not use"
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container.get(probe, {}).get("httpGet", {})
            assert get.get("path") == path, f"{name}: {probe} must GET {path}"
            assert ports.get(get.get("port"), get.get("port")) == port, f"{name}: {probe} on the wrong port"
        assert pod.get("terminationGracePeriodSeconds", 30) >= grace, \
            f"{name}: terminationGracePeriodSeconds below {grace} s"
        assert container["args"] == [name.removeprefix("mailsync-")], f"{name} runs {container['args']}"


def test_migration_job_runs_mailsync_migrate(objects: tuple[Obj, ...]) -> None:
    job = named(objects, "Job", "mailsync-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"].get("backoffLimit", 6) >= 1


def test_the_migrate_phase_selects_everything_the_job_needs(objects: tuple[Obj, ...]) -> None:
    """`kubectl apply -k OVERLAY -l mailsync.io/phase=migrate` must be enough to run the Job alone."""
    phase = [o for o in objects if o["metadata"].get("labels", {}).get("mailsync.io/phase") == "migrate"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in phase}
    job = named(objects, "Job", "mailsync-migrate")
    pod = job["spec"]["template"]["spec"]
    needed = {("Job", "mailsync-migrate"), ("ServiceAccount", pod["serviceAccountName"])}
    needed |= {("Namespace", job["metadata"]["namespace"])}
    needed |= {("ConfigMap", e["valueFrom"]["configMapKeyRef"]["name"])
               for c in pod["containers"] for e in c.get("env", []) if "configMapKeyRef" in e.get("valueFrom", {})}
    assert needed <= kinds, f"missing from the migrate phase: {needed - kinds}"
    policies = [o for o in phase if o["kind"] == "NetworkPolicy"]
    if of_kind(objects, "NetworkPolicy"):  # default deny is on: the job's own flows must come along
        job_labels = job["spec"]["template"]["metadata"]["labels"]
        allowed = set()
        for policy in policies:
            selector = policy["spec"]["podSelector"]
            names = next((e["values"] for e in selector.get("matchExpressions", [])
                          if e["key"] == "app.kubernetes.io/name"), None)
            if selector.get("matchLabels", {}).items() <= job_labels.items() and (
                    names is None or job_labels["app.kubernetes.io/name"] in names):
                allowed |= {p for r in policy["spec"].get("egress", []) for p in _ports(r)}
        assert {("UDP", 53), ("TCP", 5432)} <= allowed, f"the migration job cannot reach DNS and PostgreSQL: {allowed}"


def test_service_accounts_mount_no_token(objects: tuple[Obj, ...]) -> None:
    accounts = of_kind(objects, "ServiceAccount")
    assert {a["metadata"]["name"] for a in accounts} >= {*SERVICES, "mailsync-migrate"}
    assert all(a.get("automountServiceAccountToken") is False for a in accounts)


# --- secrets and settings -------------------------------------------------------------------------

def test_no_secret_with_data_is_committed(objects: tuple[Obj, ...]) -> None:
    rendered = [ident(o) for o in objects if o["kind"] == "Secret"]
    assert not rendered, f"Secrets are created by the operator (docs/deploy.md), never rendered: {rendered}"
    for path in DEPLOY.rglob("*.y*ml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), f"{path} commits a Secret's data"


def test_the_configmap_holds_settings_and_no_secret(objects: tuple[Obj, ...]) -> None:
    data = named(objects, "ConfigMap", "mailsync-config")["data"]
    assert all(key.startswith("MAILSYNC_") for key in data)
    assert not SECRET_KEYS & set(data), f"secret settings in the ConfigMap: {SECRET_KEYS & set(data)}"
    assert "MAILSYNC_KAFKA_BOOTSTRAP" in data


# --- network policies ------------------------------------------------------------------------------

def _ports(rule: Obj) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}


def test_network_policies_deny_by_default_then_allow_exactly_the_flows(objects: tuple[Obj, ...]) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)"

    ingress: set[tuple[str, str, int]] = set()
    egress: set[tuple[str, int]] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{ident(policy)} admits traffic from anywhere"
            for peer in rule["from"]:
                source = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                assert source, f"{ident(policy)}: ingress peer {peer} is not a named namespace"
                ingress |= {(source, proto, port) for proto, port in _ports(rule)}
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to") and rule.get("ports"), f"{ident(policy)} allows egress to anywhere on any port"
            egress |= _ports(rule)
    assert ingress == {("ingress-nginx", "TCP", 8080),
                       ("monitoring", "TCP", 8080), ("monitoring", "TCP", 8081), ("monitoring", "TCP", 8082)}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 9092), ("TCP", 9093), ("TCP", 5432), ("TCP", 443)}

    public = [p for p in policies for r in p["spec"].get("egress", []) if ("TCP", 443) in _ports(r)]
    for policy in public:
        for rule in policy["spec"]["egress"]:
            for peer in rule["to"]:
                block = peer.get("ipBlock")
                if block and block["cidr"] == "0.0.0.0/0":
                    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
                        block.get("except", [])), "443 egress reaches private or metadata addresses"


# --- per overlay -----------------------------------------------------------------------------------

def test_prod_autoscales_the_subscriber_on_cpu_and_the_matcher_on_lag(prod: tuple[Obj, ...]) -> None:
    hpa = named(prod, "HorizontalPodAutoscaler", "mailsync-subscriber")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mailsync-subscriber"
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]

    scaled = named(prod, "ScaledObject", "mailsync-matcher")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "mailsync-matcher"
    assert scaled["spec"]["minReplicaCount"] >= 2
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "mailsync-matcher"
    assert trigger["metadata"]["topic"] == events.NOTIFICATIONS
    config = named(prod, "ConfigMap", "mailsync-config")["data"]
    assert trigger["metadata"]["bootstrapServers"] == config["MAILSYNC_KAFKA_BOOTSTRAP"]
    topic = named(prod, "KafkaTopic", events.NOTIFICATIONS)
    assert scaled["spec"]["maxReplicaCount"] <= topic["spec"]["partitions"], "more consumers than partitions"


def test_prod_runs_two_replicas_spread_with_disruption_budgets(prod: tuple[Obj, ...]) -> None:
    for deployment in of_kind(prod, "Deployment"):
        name = deployment["metadata"]["name"]
        assert deployment["spec"]["replicas"] >= 2, name
        pod = deployment["spec"]["template"]["spec"]
        spread = pod.get("topologySpreadConstraints") or []
        anti = pod.get("affinity", {}).get("podAntiAffinity")
        assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"} or anti, f"{name} not spread"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in of_kind(prod, "PodDisruptionBudget")
                if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(pdbs) == 1, f"{name}: {len(pdbs)} PodDisruptionBudgets"
        budget = pdbs[0]["spec"]
        assert budget.get("maxUnavailable", 0) < deployment["spec"]["replicas"] or budget.get("minAvailable"), name


def test_prod_declares_every_topic_and_dead_letter_topic(prod: tuple[Obj, ...]) -> None:
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(prod, "KafkaTopic")}
    assert set(topics) == ALL_TOPICS
    assert set(events.ALL_TOPIC_NAMES) <= set(topics), "the code uses a topic the manifests do not declare"
    for name in TOPICS:  # the partitions the code's `mailsync topics` would create
        spec = next(s for s in events.TOPICS if s.name == name)
        assert topics[name]["spec"]["partitions"] == spec.partitions, name
    assert topics[events.CONNECTION_STATUS]["spec"]["config"]["cleanup.policy"] == "compact"
    directory = topics[events.DIRECTORY]["spec"]["config"]
    assert int(directory["retention.ms"]) == -1, "the directory is replayed from the start: keep it forever"
    assert "compact" not in directory["cleanup.policy"], "keyed by account: compaction would drop entities"
    for topic in topics.values():
        assert topic["spec"]["replicas"] >= 3 and int(topic["spec"]["config"]["min.insync.replicas"]) >= 2


def test_prod_exposes_only_the_public_routes_over_tls(prod: tuple[Obj, ...]) -> None:
    ingress = named(prod, "Ingress", "mailsync-subscriber")
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts and hosts <= {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    paths = {p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert paths == {"/graph", "/oauth/microsoft365", "/settings/email", "/api/v1"}
    assert not {"/", "/metrics", "/healthz", "/readyz"} & paths


def test_prod_pins_the_image(prod: tuple[Obj, ...]) -> None:
    for obj, pod in workloads(prod):
        for container in pod["containers"]:
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or (tag and tag not in ("latest", "dev", "main")), f"{ident(obj)}: {image}"


def test_dev_is_small_and_not_autoscaled(dev: tuple[Obj, ...]) -> None:
    assert not of_kind(dev, "HorizontalPodAutoscaler") and not of_kind(dev, "ScaledObject")
    for deployment in of_kind(dev, "Deployment"):
        assert deployment["spec"]["replicas"] == 1
    for topic in of_kind(dev, "KafkaTopic"):
        assert topic["spec"]["replicas"] == 1 and int(topic["spec"]["config"]["min.insync.replicas"]) == 1
