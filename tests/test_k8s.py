"""deploy/k8s, checked without a cluster: every overlay rendered by Kustomize, every object
validated against the Kubernetes schemas (KEDA's CRD for the ScaledObject), and the invariants
the design needs: limits, probes, non-root, GPUs, and a KEDA trigger on a metric the API exports."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cli.main import parser
from facesense import redisconn
from facesense.queue import INFERENCE_QUEUE
from facesense.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES = "1.31"  # the oldest release the manifests promise to run on (still supported)
KEDA_CRD = ROOT / "tests" / "data" / "keda.sh_scaledobjects.yaml"
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize` renders for an overlay (offline: no network needed)."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not on the PATH (apt-get install kubectl)")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(objects, kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pods(objects):
    """(workload, pod spec) for every workload that starts pods."""
    return [(o, o["spec"]["template"]["spec"]) for o in objects if o["kind"] in WORKLOADS]


def containers(objects):
    return [(o, c) for o, spec in pods(objects)
            for c in spec["containers"] + spec.get("initContainers", [])]


@functools.cache
def scaledobject_schema() -> dict:
    """The ScaledObject's openAPIV3Schema from KEDA's vendored CRD, made strict as the API
    server's field validation is (an unknown field is an error, not silently pruned)."""
    crd = next(d for d in yaml.safe_load_all(KEDA_CRD.read_text()) if d)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return strict(version["schema"]["openAPIV3Schema"])


def strict(node):
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [strict(v) for v in node]
    return node


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay):
    assert {"cpu", "gpu", "gpu-sentinel"} <= set(OVERLAYS)
    for obj in render(overlay):
        if obj["apiVersion"].startswith("keda.sh/"):
            assert obj["kind"] == "ScaledObject"
            jsonschema.validate(obj, scaledobject_schema())
        else:  # strict: a misspelt or misplaced field fails here, as kubectl apply would
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    crd = next(d for d in yaml.safe_load_all(KEDA_CRD.read_text()) if d)
    kubernetes_validate.validate(crd, KUBERNETES, strict=True)


def test_the_strict_scaledobject_schema_refuses_a_misspelt_field():
    obj = find(render("gpu"), "ScaledObject", "scoring-worker")
    bad = {**obj, "spec": {**obj["spec"], "maxReplicas": 3}}
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(bad, scaledobject_schema())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_runs_as_non_root(overlay):
    for workload, spec in pods(render(overlay)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod.get("runAsUser", 1) != 0, workload["metadata"]
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    for workload, c in containers(render(overlay)):
        where = f"{workload['metadata']['name']}/{c['name']}"
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), where
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert context["readOnlyRootFilesystem"] is True, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_container_has_readiness_and_liveness_probes(overlay):
    for workload, c in containers(render(overlay)):
        if workload["kind"] != "Job":
            assert {"readinessProbe", "livenessProbe"} <= set(c), workload["metadata"]["name"]
    api = find(render(overlay), "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    dockerfile = (ROOT / "docker" / "api.Dockerfile").read_text()
    cmd = yaml.safe_load(re.search(r"^CMD\s+(\[.*\])$", dockerfile, re.M).group(1))
    assert set(cmd) <= set(api["args"])  # the image's own command, flags and all


def test_the_gpu_overlay_gives_each_scoring_and_training_pod_one_gpu_and_the_cpu_one_none():
    for name in ("scoring-worker", "training-worker"):
        spec = find(render("gpu"), "Deployment", name)["spec"]["template"]["spec"]
        (worker,) = spec["containers"]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert spec["nodeSelector"] and {"key": "nvidia.com/gpu", "operator": "Exists",
                                         "effect": "NoSchedule"} in spec["tolerations"]
    assert "nvidia.com/gpu" not in str(render("cpu"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scoring_workers_stop_gracefully_and_a_disruption_budget_covers_them(overlay):
    objects = render(overlay)
    worker = find(objects, "Deployment", "scoring-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 300
    labels = worker["spec"]["template"]["metadata"]["labels"]
    pdb = find(objects, "PodDisruptionBudget", "scoring-worker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert find(objects, "Deployment", "training-worker")["spec"]["replicas"] >= 1
    control = find(objects, "Deployment", "control-worker")  # plans run while scoring is at 0
    assert control["spec"]["replicas"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_and_variable_resolves_and_names_a_real_setting(overlay):
    objects = render(overlay)
    data = {(o["kind"], o["metadata"]["name"]): set(o.get("data", {})) for o in objects
            if o["kind"] in ("ConfigMap", "Secret")}
    for kind, name in data:
        assert {k for k in data[kind, name] if k.startswith("FACESENSE_")} <= set(Settings().env())
    for workload, c in containers(objects):
        defined = set()
        for source in c.get("envFrom", []):
            kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source \
                else ("Secret", source["secretRef"])
            defined |= data[kind, ref["name"]]  # KeyError: a name Kustomize did not rewrite
        for var in c.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in data["Secret", ref["name"]]
            for used in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                assert used in defined, f"{workload['metadata']['name']}: $({used})"
            defined.add(var["name"])
        for used in re.findall(r"\$\((\w+)\)", " ".join(c.get("args", []))):
            assert used in defined, f"{workload['metadata']['name']}: $({used})"
        names = [v["name"] for v in c.get("env", [])] + sorted(defined)
        assert {n for n in names if n.startswith("FACESENSE_")} <= set(Settings().env())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_commands_start_something_in_the_project(overlay):
    for _, c in containers(render(overlay)):
        args = c.get("args", [])
        if args[:1] == ["facesense"]:
            parsed = parser().parse_args(args[1:])
            assert parsed.queues in ("inference", "training")
        elif args[:3] == ["celery", "-A", "worker.control"]:
            assert (ROOT / "worker" / "control.py").is_file()


def trigger_metrics(objects) -> set[str]:
    """The facesense_* names the ScaledObject's Prometheus queries read."""
    obj = find(objects, "ScaledObject", "scoring-worker")
    return {name for t in obj["spec"]["triggers"] if t["type"] == "prometheus"
            for name in re.findall(r"\bfacesense_\w+", t["metadata"]["query"])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_scoring_workers_from_zero_to_a_cap_on_the_backlog(overlay):
    objects = render(overlay)
    obj = find(objects, "ScaledObject", "scoring-worker")
    target = find(objects, "Deployment", obj["spec"]["scaleTargetRef"]["name"])
    assert "replicas" not in target["spec"]  # KEDA's HPA owns the count
    assert obj["spec"]["minReplicaCount"] == 0 and obj["spec"]["maxReplicaCount"] >= 1
    for trigger in obj["spec"]["triggers"]:
        assert trigger["type"] in ("prometheus", "redis")
        if trigger["type"] == "redis":
            assert trigger["metadata"]["listName"] == INFERENCE_QUEUE
            (worker,) = target["spec"]["template"]["spec"]["containers"]
            secret = worker["envFrom"][1]["secretRef"]["name"]
            keys = set(find(objects, "Secret", secret)["data"])
            assert trigger["metadata"]["passwordFromEnv"] in keys


def test_the_keda_trigger_names_a_metric_the_running_api_exports(stack):
    # Given the metric names the overlays' Prometheus triggers read
    wanted = set().union(*(trigger_metrics(render(o)) for o in OVERLAYS))
    assert wanted == {"facesense_shards_waiting"}
    # When the API of a running stack (a real Redis behind it) is scraped
    page = stack.api.get("/metrics")
    assert page.status_code == 200
    exported = {f.name for f in text_string_to_metric_families(page.get_data(as_text=True))}
    # Then it exports each of them
    assert wanted <= exported


def test_the_sentinel_layout_replaces_the_url_with_three_sentinels():
    objects = render("gpu-sentinel")
    assert "FACESENSE_REDIS_URL" not in str(objects) and not [
        o for o in objects if o["metadata"]["name"] == "redis"]
    (config,) = [o for o in objects if o["kind"] == "ConfigMap"
                 and o["metadata"]["name"].startswith("facesense-settings")]
    settings = Settings(redis_sentinels=config["data"]["FACESENSE_REDIS_SENTINELS"])
    node = find(objects, "StatefulSet", "redis-node")
    assert node["spec"]["replicas"] == 3  # a primary, two replicas; sentinels' quorum 2 of 3
    assert redisconn.sentinel_addresses(settings) == [
        (f"redis-node-{i}.redis-node", 26379) for i in range(3)]
    assert {c["name"] for c in node["spec"]["template"]["spec"]["containers"]} == {"redis", "sentinel"}
