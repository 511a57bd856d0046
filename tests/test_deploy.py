"""The Kubernetes manifests: they parse, and what they name exists (no cluster runs here).

What is checked: every file is valid YAML of a known kind and the kustomization
lists them all; the supervisor's arguments are ones `cloaca-sandbox serve`
accepts and validates; every file an argument names is mounted, from a Secret key
the Secret defines; the probes and the headless Service point at the port the
service listens on; the Service selects the Deployment's pods; the security
context grants what the README says confinement needs; the image's Dockerfile
copies directories that exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from supervisor.cli import build_parser
from supervisor.options import load_options
from supervisor.service_config import ServiceConfig
from tests.conftest import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests (pip install -e '.[test]')")

MANIFESTS = ROOT / "deploy" / "kubernetes"


def documents() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{path.name}"] = document
    return found


def one(kind: str) -> dict[str, Any]:
    [document] = [d for key, d in documents().items() if key.startswith(f"{kind}/")]
    return document


def test_every_manifest_parses_and_the_kustomization_lists_them_all():
    kinds = {key.split("/")[0] for key in documents()}
    assert kinds == {"Kustomization", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
    listed = set(one("Kustomization")["resources"])
    assert listed == {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_supervisors_arguments_are_ones_serve_accepts(tmp_path):
    container = one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    parsed = vars(build_parser().parse_args(args))
    assert parsed["handler"].__name__ == "command_serve"
    # Validate them as serve would, with the mounted secret files stood in by real ones.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    secret = one("Secret")
    stand_ins = {}
    for name in ("api_keys", "registry_file"):
        path = Path(parsed[name])
        assert str(path.parent) in mounts, f"{path} is in no mounted volume"
        stand_in = tmp_path / path.name
        stand_in.write_text(secret["stringData"][path.name])
        stand_ins[name] = str(stand_in)
    config = load_options(ServiceConfig, {**parsed, **stand_ins, "data_dir": str(tmp_path / "data")})
    assert config.registry_url is not None and config.registry_url.startswith("postgresql://")
    assert config.listen == "0.0.0.0:50051" and config.api_keys is not None  # keys: required off loopback
    assert str(Path(parsed["data_dir"])) in mounts


def test_secret_keys_mounted_exist_and_probes_and_service_use_the_listening_port():
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    secret = one("Secret")
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes
    secret_volume = volumes["secret"]["secret"]
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    assert {item["key"] for item in secret_volume["items"]} <= set(secret["stringData"])

    listen_port = int(next(a for a in container["args"] if a.startswith("--listen=")).rsplit(":", 1)[1])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["grpc"] == listen_port
    metrics = next(a for a in container["args"] if a.startswith("--metrics-listen="))
    assert ports["metrics"] == int(metrics.rsplit(":", 1)[1])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == listen_port  # the standard health service

    service = one("Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: clients balance over the pods themselves
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_security_context_grants_what_confinement_needs_and_no_more():
    container = one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    context = container["securityContext"]
    assert context["privileged"] is False
    assert "SYS_ADMIN" in context["capabilities"]["add"] and context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "Unconfined"  # the supervisor calls unshare, mount, pivot_root
    assert context["appArmorProfile"]["type"] == "Unconfined"
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    readme = (ROOT / "README.md").read_text()
    assert "seccomp profile that lets it call" in readme and "deploy/kubernetes" in readme


def test_the_image_copies_what_exists():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+)", dockerfile, flags=re.M)
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
    assert "libseccomp2" in dockerfile
    image = one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[-1] in dockerfile  # the tag the Dockerfile's build line makes
