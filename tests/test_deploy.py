"""The deployment paths: Kubernetes manifests, the readiness probe against the live server, the Docker build
context (.dockerignore) and the runtime requirements resolving in a clean virtual environment.

What needs Docker, a GPU or a cluster (`cog build`, `docker run --gpus all`, `kubectl apply`) cannot run
here; these tests check everything those commands rely on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import kubernetes_validate
import psutil
import pytest
import requests
import yaml

from tests.helpers import ROOT
from tests.helpers.cog_server import running_cog_server
from tests.helpers.images import data_uri

KUBERNETES = ROOT / "deploy" / "kubernetes"
# The newest Kubernetes whose schemas kubernetes-validate bundles (offline).
KUBERNETES_VERSION = kubernetes_validate.latest_version()


# The two PersistentVolumeClaims, by the name the Deployment mounts them by.
WEIGHTS_CLAIM = "open-character-weights"
COMPILE_CACHE_CLAIM = "open-character-compile-cache"


def documents() -> dict[str, dict]:
    """Every manifest under deploy/kubernetes, by kind, or kind/name where a kind has several."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            key = document["kind"]
            if key == "PersistentVolumeClaim":
                key = f"{key}/{document['metadata']['name']}"
            assert key not in found, f"two {key} manifests"
            found[key] = document
    return found


MANIFESTS = documents()


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_manifest_passes_the_kubernetes_schema_strictly(kind):
    # strict: unknown fields are errors too (a typo such as `readinesProbe` would be silently ignored).
    kubernetes_validate.validate(MANIFESTS[kind], KUBERNETES_VERSION, strict=True)


def test_the_schema_check_can_fail():
    broken = json.loads(json.dumps(MANIFESTS["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def container() -> dict:
    return MANIFESTS["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_the_deployment_asks_for_one_gpu_and_serves_cogs_port():
    resources = container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["nvidia.com/gpu"] == 1
    assert [port["containerPort"] for port in container()["ports"]] == [5000]  # Cog's port


def test_the_weights_volume_is_where_the_image_reads_them():
    cog_env = dict(
        line.split("=", 1) for line in yaml.safe_load((ROOT / "cog.yaml").read_text())["environment"]
    )
    env = {item["name"]: item.get("value") for item in container()["env"]}
    assert env["WEIGHTS_DIR"] == cog_env["WEIGHTS_DIR"] == "/src/weights"
    assert env["CHARACTER_SAFETY_CHECKER"] == "on"
    mount = next(m for m in container()["volumeMounts"] if m["mountPath"] == env["WEIGHTS_DIR"])
    volume = next(
        v
        for v in MANIFESTS["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )
    claim = MANIFESTS[f"PersistentVolumeClaim/{WEIGHTS_CLAIM}"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim and mount["readOnly"] is True
    # The job that fills the claim runs the project's downloader into the same path.
    job = MANIFESTS["Job"]["spec"]["template"]["spec"]
    assert job["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    assert job["containers"][0]["volumeMounts"][0]["mountPath"] == env["WEIGHTS_DIR"]
    command = job["containers"][0]["command"]
    assert (ROOT / command[1]).is_file() and command[command.index("--weights-dir") + 1] == env["WEIGHTS_DIR"]
    assert job["containers"][0]["image"] == container()["image"]


def test_the_compile_cache_is_on_a_writable_volume_of_its_own():
    """The weights are mounted read-only, so the server's default cache (the weights folder's
    .compile-cache) would fall back to a temporary folder: the variables point it at a writable claim."""
    from model.options import INDUCTOR_CACHE_ENV, TRITON_CACHE_ENV

    env = {item["name"]: item.get("value") for item in container()["env"]}
    mount = next(m for m in container()["volumeMounts"] if m["name"] == "compile-cache")
    assert not mount.get("readOnly", False)
    for name in (INDUCTOR_CACHE_ENV, TRITON_CACHE_ENV):
        assert env[name].startswith(mount["mountPath"] + "/")
    volume = next(
        v
        for v in MANIFESTS["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )
    assert volume["persistentVolumeClaim"]["claimName"] == COMPILE_CACHE_CLAIM
    assert not volume["persistentVolumeClaim"].get("readOnly", False)
    assert MANIFESTS[f"PersistentVolumeClaim/{COMPILE_CACHE_CLAIM}"]["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


def test_the_service_and_autoscaler_point_at_the_deployment():
    labels = MANIFESTS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = MANIFESTS["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] in [port["name"] for port in container()["ports"]]
    target = MANIFESTS["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", MANIFESTS["Deployment"]["metadata"]["name"])


def test_the_cog_port_is_reachable_only_from_labelled_clients():
    # coglet serves an unauthenticated POST /shutdown on the prediction port (checked live below).
    assert MANIFESTS["Service"]["spec"]["type"] == "ClusterIP"
    assert not {"Ingress", "Gateway", "HTTPRoute"} & MANIFESTS.keys()
    policy = MANIFESTS["NetworkPolicy"]["spec"]
    labels = MANIFESTS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    # Every source is a pod selector with a label: no ipBlock, no empty selector that would admit all.
    assert rule["from"] and all(source.keys() == {"podSelector"} for source in rule["from"])
    assert all(source["podSelector"].get("matchLabels") for source in rule["from"])
    assert [port["port"] for port in rule["ports"]] == [port["name"] for port in container()["ports"]]


@pytest.mark.server
def test_coglet_serves_an_unauthenticated_shutdown_on_the_prediction_port(tmp_path):
    """Why the port must stay private: any client that reaches it can stop the server."""
    with running_cog_server(tmp_path / "no-weights", tmp_path / "server.log") as server:
        response = requests.post(f"{server.url}/shutdown", timeout=10)
        assert response.status_code == 200
        deadline = time.monotonic() + 30
        while psutil.pid_exists(server.pid) and psutil.Process(server.pid).status() != "zombie":
            assert time.monotonic() < deadline, "the server did not stop"
            time.sleep(0.2)
        with pytest.raises(requests.ConnectionError):
            server.health()


def test_the_startup_probe_allows_minutes_for_model_load():
    startup = container()["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 10 * 60
    assert startup["exec"] == container()["readinessProbe"]["exec"]


def probe(url: str) -> int:
    """Run the readiness probe's exact command, pointed at `url` instead of the pod's 127.0.0.1:5000."""
    command = container()["readinessProbe"]["exec"]["command"]
    assert command[0] == "python"
    script = command[-1].replace("http://127.0.0.1:5000", url)
    assert url in script
    return subprocess.run([sys.executable, *command[1:-1], script], timeout=30).returncode


FAST = {"rendering_speed": "Turbo", "magic_prompt_option": "Off"}


@pytest.mark.server
def test_readiness_probe_is_ready_when_the_server_is_ready_or_busy(cog_server, portrait):
    assert cog_server.health()["status"] == "READY" and probe(cog_server.url) == 0
    busy = requests.post(
        f"{cog_server.url}/predictions",
        json={"input": {"prompt": "x", "character_reference_image": data_uri(portrait), **FAST}},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert busy.status_code == 202
    deadline = time.monotonic() + 20
    while cog_server.health()["status"] != "BUSY" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cog_server.health()["status"] == "BUSY" and probe(cog_server.url) == 0
    assert cog_server.settles_ready(timeout=120)


@pytest.mark.server
def test_readiness_probe_is_not_ready_after_a_failed_setup_though_http_says_200(tmp_path):
    with running_cog_server(tmp_path / "no-weights", tmp_path / "server.log") as server:
        response = requests.get(f"{server.url}/health-check", timeout=10)
        assert response.json()["status"] == "SETUP_FAILED"
        # Why an httpGet probe is not enough: Cog answers 200 whatever its status.
        assert response.status_code == 200
        assert probe(server.url) == 1


def test_readiness_probe_is_not_ready_when_nothing_answers():
    from tests.helpers.cog_server import free_port

    assert probe(f"http://127.0.0.1:{free_port()}") != 0


# --- The Docker build context.


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative to the context) out, by .dockerignore's rules (moby's
    patternmatcher): patterns are relative to the root, `*` stays within one path segment, `**` spans any
    number, a matched folder takes its contents with it, `!` re-includes, and the last match wins."""
    ignored = False
    parts = path.split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        regex = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = "^" + regex.replace("\0/", "(.*/)?").replace("\0", ".*") + "$"
        if any(re.match(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    ["weights/sdxl/unet/diffusion_pytorch_model.fp16.safetensors", "weights/manifest.json",
     ".cache/tiny-weights/x", ".venv/bin/python", "outputs/demo.png", ".git/HEAD",
     "model/__pycache__/service.cpython-311.pyc", "weights.tar",
     # The browser page and its environment are optional and run beside the server (make ui).
     ".venv-ui/bin/python", "ui/app.py", "requirements-ui.txt"],
)  # fmt: skip
def test_dockerignore_keeps_weights_and_caches_out(path):
    assert docker_ignored(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path",
    ["predict.py", "cog.yaml", "requirements.txt", "requirements-gpu.txt", "model/service.py",
     "model/weights/weights_manifest.json",
     "model/prompting/data/styles.json", "scripts/download_weights.py",
     "specs/sdxl-architecture/unet/config.json",
     # cog build writes its generated files under .cog/ and copies them from the context (cog#1961).
     ".cog/openapi_schema.json", ".cog/tmp/build123/requirements.txt"],
)  # fmt: skip
def test_dockerignore_keeps_what_the_image_needs(path):
    assert not docker_ignored(path, dockerignore_patterns())


def test_the_dockerignore_matcher_can_say_both():
    assert docker_ignored("a/b/c.pyc", ["**/*.pyc"]) and not docker_ignored("a/b/c.py", ["**/*.pyc"])
    assert not docker_ignored("weights/README.md", ["weights/", "!weights/README.md"])


# --- The runtime requirements.


@pytest.mark.slow
def test_requirements_resolve_in_a_clean_virtual_environment(tmp_path):
    """pip's resolver, in a fresh venv, over requirements.txt: every pin exists for Python 3.11, and the
    pins and their dependencies agree. A dry run (the package index is read, nothing is installed): the full
    install downloads ~1 GB for a result the resolver has already decided. The GPU image installs the CUDA
    build of the same torch version; here the index holds the CPU one."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
         "--report", str(report), "-r", str(ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert resolved[name.lower().replace("_", "-")].split("+")[0] == version, name
