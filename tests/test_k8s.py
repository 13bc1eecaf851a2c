"""deploy/k8s: the kustomize base is complete, valid, and agrees with mmq's own routing and limits.

No cluster runs here, and nothing reaches the network. Every file that kustomization.yaml lists is
loaded; the core kinds are validated offline against the Kubernetes 1.30 schemas (kubernetes-validate,
strict: an unknown field is an error); KEDA's ScaledObjects, a CRD with no bundled schema, are checked
field by field. Then the manifests are held against mmq itself: one worker Deployment per
specialisation, each ScaledObject measuring the Redis list that Celery routes that specialisation's
tasks to; GPUs, probes, grace periods, the visibility timeout and the models as SPECIALISATIONS and
Settings have them; Services that select real pods; placeholder secrets; and worker files equal to
what deploy/k8s/generate.py writes.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mmq.tasks import Settings
from mmq.tasks.catalogue import TASKS
from mmq.tasks.celery_app import make_celery
from mmq.tasks.specialisation_specs import SPECIALISATIONS

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
CORE_KINDS = {"Namespace", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet"}
CPU_ONLY = {"media"}  # PyAV on the CPU: no GPU, no model
GPU = "nvidia.com/gpu"


@functools.cache
def listed_files() -> tuple[str, ...]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return tuple(kustomization["resources"])


@functools.cache
def documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file, document) for every document of every listed file."""
    return tuple((name, doc) for name in listed_files()
                 for doc in yaml.safe_load_all((K8S / name).read_text()) if doc is not None)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    found = [doc for _, doc in documents() if doc["kind"] == kind]
    by_name = {doc["metadata"]["name"]: doc for doc in found}
    assert len(by_name) == len(found), f"two {kind}s share a name"
    return by_name


def workers() -> dict[str, dict[str, Any]]:
    """The worker Deployments by specialisation."""
    return {d["spec"]["template"]["metadata"]["labels"]["mmq.dev/specialisation"]: d
            for d in of_kind("Deployment").values()
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "mmq-worker"}


def scaled_objects() -> dict[str, dict[str, Any]]:
    """The ScaledObjects by the specialisation of the Deployment they scale."""
    deployments = of_kind("Deployment")
    return {deployments[s["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["metadata"]["labels"]
            ["mmq.dev/specialisation"]: s for s in of_kind("ScaledObject").values()}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def settings_map() -> dict[str, str]:
    return of_kind("ConfigMap")["mmq-settings"]["data"]


def secret_values() -> dict[str, str]:
    secret = of_kind("Secret")["mmq-secrets"]
    decoded = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**decoded, **(secret.get("stringData") or {})}


def environment(deployment: dict[str, Any]) -> dict[str, str]:
    """A container's plain environment: its envFrom ConfigMaps and Secrets, then its env values."""
    maps = {"configMapRef": {n: d["data"] for n, d in of_kind("ConfigMap").items()},
            "secretRef": {"mmq-secrets": secret_values()}}
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        (ref, target), = source.items()
        env.update(maps[ref][target["name"]])
    env.update({e["name"]: e["value"] for e in container(deployment).get("env", []) if "value" in e})
    return env


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("mmq_k8s_generate", K8S / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


# --- the files --------------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest_and_every_listed_file_exists():
    on_disk = {str(p.relative_to(K8S)) for p in K8S.rglob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(on_disk - set(listed_files())) == [], "not listed in kustomization.yaml"
    assert sorted(set(listed_files()) - on_disk) == [], "listed in kustomization.yaml but missing"
    assert len(set(listed_files())) == len(listed_files()), "a file is listed twice"


def test_the_base_puts_everything_in_the_mmq_namespace_with_the_part_of_label():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "mmq"
    assert list(of_kind("Namespace")) == ["mmq"]
    part_of = {"pairs": {"app.kubernetes.io/part-of": "mmq"}, "includeSelectors": True}
    assert part_of in kustomization["labels"]


def test_the_committed_worker_files_are_what_generate_py_writes():
    for name, text in load_generator().render().items():
        assert (K8S / name).read_text() == text, f"{name} is stale: .venv/bin/python deploy/k8s/generate.py"


# --- schemas ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, doc", [(n, d) for n, d in documents() if d["kind"] in CORE_KINDS],
                         ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}")
def test_core_kinds_validate_against_the_kubernetes_schemas(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError


def test_only_core_kinds_and_keda_scaled_objects_are_deployed():
    kinds = {doc["kind"] for _, doc in documents()}
    assert kinds == CORE_KINDS | {"ScaledObject"}


def test_scaled_objects_are_keda_redis_scalers_on_existing_deployments():
    deployments = of_kind("Deployment")
    for name, scaled in of_kind("ScaledObject").items():
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments, name
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
        assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0, name
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis", name
        metadata = trigger["metadata"]
        # The CRD types trigger metadata as map[string]string: a bare number is refused by the API server.
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert metadata["listName"] and metadata["databaseIndex"] == "0"
        assert int(metadata["listLength"]) > 0


# --- against mmq ------------------------------------------------------------------------------------

def test_there_is_one_worker_deployment_per_specialisation_running_it():
    assert sorted(workers()) == sorted(SPECIALISATIONS)
    for name, deployment in workers().items():
        assert container(deployment)["args"] == ["worker", name]
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def test_selectors_match_their_pod_templates_and_services_select_real_pods():
    controllers = [*of_kind("Deployment").values(), *of_kind("StatefulSet").values()]
    for controller in controllers:
        selector = controller["spec"]["selector"]["matchLabels"]
        assert selector.items() <= controller["spec"]["template"]["metadata"]["labels"].items()
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"].items()
        selected = [c for c in controllers if selector <= c["spec"]["template"]["metadata"]["labels"].items()]
        assert selected, f"Service {name} selects no pods"
        ports = {p["name"] for c in selected for p in container(c).get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port {port['targetPort']}"


def test_each_scaled_object_measures_the_queue_celery_routes_its_specialisation_to():
    conf = make_celery(Settings()).conf
    queues = {q.name: q for q in conf.task_queues}
    scaled = scaled_objects()
    assert sorted(scaled) == sorted(SPECIALISATIONS)
    for name, spec in SPECIALISATIONS.items():
        routed = {conf.task_routes[task.celery_name]["queue"]
                  for task in TASKS.values() if task.specialisation == name}
        list_name = scaled[name]["spec"]["triggers"][0]["metadata"]["listName"]
        # kombu's Redis transport keeps a queue's waiting messages in a list named after the queue.
        assert routed <= {list_name} == {spec.queue}, name
        assert queues[list_name].routing_key == list_name
        assert scaled[name]["spec"]["scaleTargetRef"]["name"] == workers()[name]["metadata"]["name"]


def test_keda_reaches_the_redis_that_workers_use_through_their_environment():
    redis = of_kind("Service")["redis"]
    for name, scaled in scaled_objects().items():
        env = environment(workers()[name])
        address = env[scaled["spec"]["triggers"][0]["metadata"]["addressFromEnv"]]
        host, port = address.rsplit(":", 1)
        # KEDA connects from its own namespace: the host must name the namespace too.
        assert host.split(".")[:2] == ["redis", "mmq"], address
        assert int(port) == redis["spec"]["ports"][0]["port"]
        assert env["MMQ_BROKER_URL"] == f"redis://redis:{port}/0"


def test_gpu_workers_get_one_gpu_and_media_none():
    for name, deployment in workers().items():
        resources = container(deployment)["resources"]
        if name in CPU_ONLY:
            assert GPU not in resources.get("requests", {}) and GPU not in resources.get("limits", {}), name
            continue
        assert resources["limits"][GPU] == 1 and resources["requests"][GPU] == 1, name
        assert {"cpu", "memory"} <= resources["requests"].keys(), name


def test_every_worker_is_probed_with_mmq_ready_for_its_specialisation():
    for name, deployment in workers().items():
        worker = container(deployment)
        assert worker["readinessProbe"]["exec"]["command"] == ["mmq", "ready", name], name
        for probe in ("startupProbe", "livenessProbe"):  # alive while loading: a load is never cut short
            assert worker[probe]["exec"]["command"] == ["mmq", "ready", name, "--live"], (name, probe)
        # A model load can take minutes; the heartbeat lives 30 s.
        startup = worker["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, name
        liveness = worker["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] > 30, name


def test_a_stopped_worker_has_time_to_finish_its_step():
    for name, deployment in workers().items():
        hard_s = SPECIALISATIONS[name].time_limit_s
        grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        shutdown_s = float(environment(deployment)["MMQ_SHUTDOWN_TIMEOUT_S"])
        assert hard_s <= shutdown_s < grace_s, name


def test_the_visibility_timeout_outlasts_every_hard_time_limit():
    visibility_s = int(settings_map()["MMQ_VISIBILITY_TIMEOUT_S"])
    assert visibility_s > max(spec.time_limit_s for spec in SPECIALISATIONS.values())


def test_each_worker_environment_is_accepted_by_settings_and_names_its_default_model():
    for name, deployment in workers().items():
        env = environment(deployment)
        settings = Settings.from_env(env)  # raises ConfigurationError on a bad value
        if name not in CPU_ONLY:
            assert env[SPECIALISATIONS[name].model_env_var] == SPECIALISATIONS[name].default_model
            assert settings.model_for(name) == SPECIALISATIONS[name].default_model
        assert env["HF_HOME"] in {m["mountPath"] for m in container(deployment)["volumeMounts"]}


def test_the_gateway_flower_and_the_metrics_exporter_have_services():
    services = of_kind("Service")
    ports = {name: {p["port"] for p in s["spec"]["ports"]} for name, s in services.items()}
    assert 8600 in ports["gateway"] and 5555 in ports["flower"] and 9600 in ports["metrics"]
    assert 6379 in ports["redis"]
    deployments = of_kind("Deployment")
    assert container(deployments["gateway"])["args"] == ["gateway", "--host", "0.0.0.0", "--port", "8600"]
    assert container(deployments["gateway"])["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container(deployments["flower"])["command"] == ["celery"]
    assert container(deployments["metrics"])["args"] == ["metrics", "--port", "9600"]
    assert of_kind("StatefulSet")["redis"]["spec"]["volumeClaimTemplates"]
    assert "--appendonly" in container(of_kind("StatefulSet")["redis"])["args"]


def test_secret_values_are_placeholders():
    values = secret_values()
    secret_names = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MMQ_WEBHOOK_SECRET", "FLOWER_BASIC_AUTH"}
    assert secret_names <= values.keys()
    assert all("change-me" in value for value in values.values()), values
    assert not secret_names & settings_map().keys(), "a secret in the ConfigMap"
