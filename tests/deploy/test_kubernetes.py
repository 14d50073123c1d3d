"""deploy/kubernetes: kustomize overlays that render, pass the Kubernetes schemas, and say what the image,
compose and the service say (command, port, user, probes, settings, grace period, GPU).

``kubectl kustomize`` (kustomize is built into kubectl; no cluster is needed) renders each overlay, and
``kubernetes_validate`` checks every object against the schemas of a Kubernetes release, strictly (an
unknown or misspelt field fails). The KServe InferenceService is a custom resource those schemas do not
cover: its fields are checked here one by one, and its pod part against the Pod schema.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from service.settings import ENV_PREFIX, Settings
from tests.conftest import REPO
from tests.deploy.conftest import COMPOSE, COMPOSE_CPU, DOCKERFILE, dockerfile_instructions, exec_form, stages

KUBERNETES = REPO / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = {"cpu": KUBERNETES / "overlays" / "cpu", "gpu": KUBERNETES / "overlays" / "gpu"}
INFERENCE_SERVICE = KUBERNETES / "kserve" / "inferenceservice.yaml"
# What each overlay changes in the settings, and the image tag it runs (the Dockerfile's two flavours).
DEVICE = {"cpu": "cpu", "gpu": "cuda"}
TAG = {"cpu": "cpu", "gpu": "cuda"}
KINDS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}
GPU = "nvidia.com/gpu"
# Settings that stay out of the ConfigMap: where the service listens (--host, DAE_PORT's default 8000)
# and reads checkpoints (the image's DAE_CHECKPOINT_DIR) belong to the image; the API key to a Secret.
NOT_IN_CONFIGMAP = {"checkpoint_dir", "host", "port", "api_key"}
STARTUP_BUDGET_S = 120  # loading and warming up every model on a slow CPU or a cold GPU, with room


def newest_schema_version() -> str:
    """The newest Kubernetes 1.3x release whose schemas kubernetes_validate ships."""
    versions = [version for version in all_versions() if version.startswith("1.3")]
    assert versions, f"kubernetes_validate {kubernetes_validate.__version__} ships no 1.3x schemas"
    return versions[-1]


SCHEMA_VERSION = newest_schema_version()


# --- what the image says ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    uid: int
    port: int
    command: list[str]
    healthcheck_path: str
    start_period_s: float


def duration_s(value: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts, f"cannot read the duration {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def image() -> Image:
    """UID, port, command and health check of the Dockerfile's runtime stage."""
    runtime = stages(dockerfile_instructions(DOCKERFILE.read_text()))[-1]

    def only(keyword: str) -> str:
        values = [instruction.value for instruction in runtime if instruction.keyword == keyword]
        assert len(values) == 1, f"expected one {keyword} in the runtime stage, found {len(values)}"
        return values[0]

    args = dict(i.value.split("=", 1) for i in runtime if i.keyword == "ARG" and "=" in i.value)
    user = only("USER").split(":")[0]
    uid = args.get(user.strip("${}"), user)
    assert uid.isdigit(), f"USER {user}: expected a numeric uid (runAsNonRoot can only verify a number)"
    (port,) = only("EXPOSE").split()
    healthcheck = only("HEALTHCHECK")
    start_period = re.search(r"--start-period=(\S+)", healthcheck)
    path = re.search(r"(/[a-z]+)'", healthcheck)
    assert start_period and path, f"HEALTHCHECK {healthcheck!r}: expected --start-period and a URL path"
    return Image(int(uid), int(port), exec_form(only("CMD")), path.group(1), duration_s(start_period.group(1)))


# --- rendering ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip(
            "kubectl is not installed: the overlays are rendered with `kubectl kustomize` (kustomize is built "
            "into kubectl >= 1.14; no cluster needed). Install the upstream kubectl binary to run these checks."
        )
    return found


def kustomize(kubectl: str, folder: Path) -> list[dict[str, Any]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBECTL_")}
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {folder.relative_to(REPO)} failed:\n{result.stderr}"
    objects = [document for document in yaml.safe_load_all(result.stdout) if document is not None]
    assert all(isinstance(document, dict) for document in objects)
    return objects


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(kubectl, folder) for name, folder in OVERLAYS.items()}


@pytest.fixture(scope="module")
def base_configmap(kubectl: str) -> dict[str, str]:
    (configmap,) = [obj for obj in kustomize(kubectl, BASE) if obj["kind"] == "ConfigMap"]
    data = configmap["data"]
    assert isinstance(data, dict)
    return data


@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def main_container(spec: dict[str, Any], name: str = "api") -> dict[str, Any]:
    containers = {container["name"]: container for container in spec["containers"]}
    assert name in containers, f"no container {name!r} in {sorted(containers)}"
    return containers[name]


def port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    named = {entry.get("name"): entry["containerPort"] for entry in container.get("ports", [])}
    assert port in named, f"port {port!r} is not a named port of {container['name']} ({named})"
    return int(named[port])


def configmap_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap")["data"]
    return data


# --- the overlays: valid Kubernetes ------------------------------------------------------------------


def test_each_overlay_renders_the_objects_the_service_needs(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, objects in rendered.items():
        kinds = {obj["kind"]: obj["apiVersion"] for obj in objects}
        assert kinds == KINDS, f"overlays/{name}"
        assert len(objects) == len(KINDS), f"overlays/{name}: one object of each kind"


def test_every_object_passes_the_kubernetes_schema_strictly(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    problems = []
    for obj in rendered[overlay]:
        try:
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']} at {where or '(top)'}: {error.message}")
    assert not problems, f"overlays/{overlay} against Kubernetes {SCHEMA_VERSION}:\n" + "\n".join(problems)


def test_the_schema_check_catches_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The strict check above is not vacuous: a misspelt probe fails it."""
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment"))
    container = main_container(deployment["spec"]["template"]["spec"])
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SCHEMA_VERSION, strict=True)


def test_objects_refer_to_each_other(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    deployment, service = one(objects, "Deployment"), one(objects, "Service")
    hpa, pdb = one(objects, "HorizontalPodAutoscaler"), one(objects, "PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for what, selector in (
        ("Deployment", deployment["spec"]["selector"]["matchLabels"]),
        ("Service", service["spec"]["selector"]),
        ("PodDisruptionBudget", pdb["spec"]["selector"]["matchLabels"]),
    ):
        assert selector and selector.items() <= pod_labels.items(), f"{what} selector does not select the pods"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    container = main_container(deployment["spec"]["template"]["spec"])
    (service_port,) = service["spec"]["ports"]
    assert port_number(container, service_port["targetPort"]) == port_number(container, "http")
    # kustomize adds a hash of the contents to the ConfigMap's name and must have rewritten the reference.
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]


# --- the overlays: what the image, compose and the service say ----------------------------------------


def test_container_runs_the_images_command_on_its_port(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, image: Image
) -> None:
    container = main_container(pod_spec(rendered[overlay]))
    assert container["command"] == image.command, "the Dockerfile's CMD"
    assert "args" not in container
    assert container["ports"] == [{"name": "http", "containerPort": image.port, "protocol": "TCP"}]


def test_image_repository_and_tag_are_the_flavour_the_dockerfile_builds(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """dae-service:cpu / dae-service:cuda, the names the Dockerfile's header and compose give them."""
    compose_image = {"cpu": COMPOSE_CPU, "gpu": COMPOSE}[overlay].read_text()
    match = re.search(r"^\s*image: \$\{IMAGE:-([^}]+)\}:(\w+)$", compose_image, re.M)
    assert match, "compose names the image ${IMAGE:-name}:tag"
    container = main_container(pod_spec(rendered[overlay]))
    assert container["image"] == f"{match.group(1)}:{TAG[overlay]}" == f"{match.group(1)}:{match.group(2)}"


def assert_hardened(spec: dict[str, Any], container: dict[str, Any], uid: int) -> None:
    """The image's non-root user, nothing to escalate to, a read-only root with /tmp writable."""
    pod = spec.get("securityContext", {})
    own = container.get("securityContext", {})
    assert pod.get("runAsNonRoot") is True
    assert pod.get("runAsUser") == uid and pod.get("runAsGroup") == uid, "the Dockerfile's ARG UID"
    assert own.get("runAsUser", uid) == uid
    assert own.get("allowPrivilegeEscalation") is False
    assert own.get("capabilities", {}).get("drop") == ["ALL"]
    assert not own.get("capabilities", {}).get("add")
    assert own.get("privileged", False) is False
    seccomp = own.get("seccompProfile") or pod.get("seccompProfile") or {}
    assert seccomp.get("type") == "RuntimeDefault"
    assert own.get("readOnlyRootFilesystem") is True
    # dae-serve writes only under /tmp (tempfile: the shared metrics folder of DAE_WORKERS > 1).
    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp (emptyDir)"
    # <SERVICE>_PORT=tcp://... variables would land in the DAE_ namespace for a Service named dae-*.
    assert spec.get("enableServiceLinks") is False


def test_pod_runs_as_the_images_user_hardened(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, image: Image
) -> None:
    spec = pod_spec(rendered[overlay])
    assert_hardened(spec, main_container(spec), image.uid)
    assert spec.get("automountServiceAccountToken") is False, "the service never calls the Kubernetes API"


def assert_probes(container: dict[str, Any], image: Image, ready_path: str) -> None:
    kinds = ("startupProbe", "readinessProbe", "livenessProbe")
    missing = [kind for kind in kinds if not container.get(kind)]
    assert not missing, f"missing probes: {missing}"
    probes: dict[str, dict[str, Any]] = {kind: container[kind] for kind in kinds}
    paths = {kind: probe["httpGet"]["path"] for kind, probe in probes.items()}
    assert paths == {"startupProbe": ready_path, "readinessProbe": ready_path, "livenessProbe": "/healthz"}
    for kind, probe in probes.items():
        assert port_number(container, probe["httpGet"]["port"]) == image.port, f"{kind} probes another port"
        assert probe.get("timeoutSeconds", 1) < probe.get("periodSeconds", 10), kind
    startup = probes["startupProbe"]
    budget = startup.get("failureThreshold", 3) * startup.get("periodSeconds", 10)
    assert budget >= max(STARTUP_BUDGET_S, image.start_period_s), (
        f"the startup probe gives up after {budget} s: too soon to load and warm up the models "
        f"(the Dockerfile's HEALTHCHECK allows {image.start_period_s:g} s)"
    )


def test_probes_ask_the_service_what_the_image_health_check_asks(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, image: Image
) -> None:
    assert image.healthcheck_path == "/readyz"
    assert_probes(main_container(pod_spec(rendered[overlay])), image, image.healthcheck_path)


def test_service_routes_exist() -> None:
    """The probed and scraped paths are routes of the service."""
    from service.routes import router

    paths = {getattr(route, "path", None) for route in router.routes}
    assert {"/readyz", "/healthz", "/metrics"} <= paths


def prestop_sleep_s(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"expected a plain sleep as preStop, got {command}"
    return float(command[1])


def assert_grace_covers_the_deadline(spec: dict[str, Any], container: dict[str, Any], timeout_s: float) -> None:
    """After the preStop sleep, SIGTERM; a request the service holds then may wait its whole deadline."""
    grace = spec.get("terminationGracePeriodSeconds", 30)
    needed = prestop_sleep_s(container) + timeout_s
    assert grace > needed, f"terminationGracePeriodSeconds {grace} <= preStop sleep + request timeout = {needed:g} s"


def test_grace_period_covers_the_prestop_sleep_and_the_request_deadline(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    spec = pod_spec(objects)
    default = Settings.model_fields["request_timeout_s"].default
    configured = float(configmap_data(objects)["DAE_REQUEST_TIMEOUT_S"])
    assert_grace_covers_the_deadline(spec, main_container(spec), max(default, configured))


def test_pods_are_scraped_by_prometheus_on_metrics(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, image: Image
) -> None:
    template = one(rendered[overlay], "Deployment")["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/path") == "/metrics"
    assert int(annotations.get("prometheus.io/port", "0")) == image.port


# --- settings -----------------------------------------------------------------------------------------


def parsed_settings(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_configmap_holds_every_tunable_setting_at_the_services_default(
    base_configmap: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in compose: every key is a setting, every tunable setting is there, and each value parses to
    the service's own default (the strings may differ: "5" for 5.0, "" for no CORS origins)."""
    fields = set()
    for name in base_configmap:
        assert name.startswith(ENV_PREFIX), name
        field = name.removeprefix(ENV_PREFIX).lower()
        assert field in Settings.model_fields, f"{name} is not a setting of service/settings.py"
        fields.add(field)
    assert set(Settings.model_fields) - fields == NOT_IN_CONFIGMAP
    defaults = parsed_settings(monkeypatch, {})
    from_configmap = parsed_settings(monkeypatch, base_configmap)
    for field in sorted(fields):
        assert getattr(from_configmap, field) == getattr(defaults, field), f"DAE_{field.upper()} differs"


def test_overlays_change_only_the_device(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, base_configmap: dict[str, str]
) -> None:
    data = configmap_data(rendered[overlay])
    assert data == {**base_configmap, "DAE_DEVICE": DEVICE[overlay]}


def test_api_key_comes_from_an_optional_secret(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    assert "DAE_API_KEY" not in configmap_data(objects)
    env = {entry["name"]: entry for entry in main_container(pod_spec(objects)).get("env", [])}
    reference = env["DAE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert reference["optional"] is True, "without the Secret the service runs without a key, as by default"
    assert reference["name"] and reference["key"]


# --- scaling, disruption, resources -----------------------------------------------------------------


def test_autoscaler_owns_the_replica_count_and_disruptions_leave_one_serving(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment, hpa, pdb = (
        one(objects, kind) for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget")
    )
    assert "replicas" not in deployment["spec"], "a count here would reset the autoscaler's on every apply"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    minimum = hpa["spec"]["minReplicas"]
    assert 2 <= minimum <= hpa["spec"]["maxReplicas"]
    budget = pdb["spec"]
    assert ("maxUnavailable" in budget) != ("minAvailable" in budget)
    left = minimum - budget["maxUnavailable"] if "maxUnavailable" in budget else budget["minAvailable"]
    assert isinstance(left, int) and left >= 1, "a drain must leave a replica serving"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1, "a rollout never drops below the count"


def test_resources_and_gpu(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    spec = pod_spec(rendered[overlay])
    resources = main_container(spec)["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{kind}: the HPA measures CPU against the request"
    gpus = {kind: resources[kind].get(GPU) for kind in ("requests", "limits")}
    tolerated = {toleration.get("key") for toleration in spec.get("tolerations", [])}
    if overlay == "gpu":
        assert str(gpus["limits"]) == "1", "one GPU per replica: one dae-serve uses one device"
        assert gpus["requests"] in (None, gpus["limits"]), "extended resources: requests equal limits"
        assert GPU in tolerated
    else:
        assert gpus == {"requests": None, "limits": None} and GPU not in tolerated


# --- KServe -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inference_service() -> dict[str, Any]:
    with INFERENCE_SERVICE.open() as handle:
        documents = [document for document in yaml.safe_load_all(handle) if document is not None]
    assert len(documents) == 1
    document: dict[str, Any] = documents[0]
    return document


# The predictor's fields that are KServe's own (ComponentExtensionSpec); the rest is a Kubernetes PodSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}


def test_inference_service_is_a_v2_custom_predictor(inference_service: dict[str, Any], image: Image) -> None:
    assert inference_service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert inference_service["kind"] == "InferenceService"
    predictor = inference_service["spec"]["predictor"]
    (container,) = predictor["containers"]
    # KServe takes the container named kserve-container as the predictor, and a custom container's
    # protocol from its PROTOCOL variable (protocolVersion belongs to its built-in model servers).
    assert container["name"] == "kserve-container"
    env = {entry["name"]: entry.get("value") for entry in container.get("env", [])}
    assert env.get("PROTOCOL") == "v2"
    assert "protocolVersion" not in predictor and "model" not in predictor
    assert container["image"] in {f"dae-service:{tag}" for tag in TAG.values()}
    assert container["command"] == image.command
    # One port, the one the server listens on; Knative accepts only the names http1 and h2c (gRPC).
    assert container["ports"] == [{"name": "http1", "containerPort": image.port, "protocol": "TCP"}]


def test_inference_service_probes_the_open_inference_protocol(inference_service: dict[str, Any], image: Image) -> None:
    (container,) = inference_service["spec"]["predictor"]["containers"]
    assert_probes(container, image, "/v2/health/ready")


def test_inference_service_pod_is_hardened_and_valid(inference_service: dict[str, Any], image: Image) -> None:
    predictor = inference_service["spec"]["predictor"]
    spec = {key: value for key, value in predictor.items() if key not in KSERVE_PREDICTOR_FIELDS}
    (container,) = spec["containers"]
    assert_hardened(spec, container, image.uid)
    assert_grace_covers_the_deadline(spec, container, Settings.model_fields["request_timeout_s"].default)
    assert predictor["scaleMetric"] == "cpu" and predictor["minReplicas"] >= 2
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": spec}
    try:
        kubernetes_validate.validate(pod, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        pytest.fail(f"the predictor's pod fields at {where}: {error.message}", pytrace=False)
