"""The deployment files: the Dockerfile (hadolint; the stages, sources and extras it names),
the Kubernetes manifests (the 1.37 schemas; the probes, ports and flags they give are the
server's), the HAProxy configuration (``haproxy -c``, also with DNS-discovered replicas), and
what docs/deploy.md and the README say of them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from realtime.flags import parse_args

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def tool(name: str) -> str:
    """``name`` on the PATH, or beside this Python (its virtualenv's ``bin``, not activated)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (the [test] extra installs it)")
    return found


def manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and "kind" in doc
    ]


def deployment() -> dict[str, Any]:
    (found,) = [m for m in manifests() if m["kind"] == "Deployment"]
    return found


# --- Dockerfile ------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_and_the_docs_build_stages_the_dockerfile_has() -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), re.M)
    assert stages[-1] == "embedded"  # what a plain `docker build` builds
    for text in (DEPLOY_DOC.read_text(), (ROOT / "README.md").read_text()):
        builds = re.findall(r"docker build (?:--target (\S+) )?-t \S+ \.", text)
        assert builds, "no docker build command"
        for target in builds:
            assert not target or target in stages, target


def test_the_dockerfile_copies_what_exists_and_installs_extras_that_exist() -> None:
    text = DOCKERFILE.read_text()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for wanted in re.findall(r'"\.\[([a-z,-]+)\]"', text):
        for extra in wanted.split(","):
            assert extra in extras, extra
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# --- Kubernetes ------------------------------------------------------------------------------


def test_the_manifests_match_the_kubernetes_schemas() -> None:
    files = [str(p) for p in sorted(KUBERNETES.glob("*.yaml")) if "adapter" not in p.name]
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", *files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deployment_probes_routes_and_flags_of_the_server() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"].split("?")[0] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"][0]["containerPort"] == 8765
    env = {e["name"]: e.get("value", "10.1.2.3") for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    parsed = parse_args(args)
    # the drain and the graceful periods (hypercorn's, then the WebRTC calls') fit in the
    # pod's grace period
    grace = spec["terminationGracePeriodSeconds"]
    assert parsed.drain_timeout_s + 2 * parsed.graceful_timeout_s < grace


def test_the_autoscaler_scales_the_deployment_on_the_adapters_metric() -> None:
    (hpa,) = [m for m in manifests() if m["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment()["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    rules = yaml.safe_load((KUBERNETES / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = rules["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    # the series the rule reads are the server's
    from realtime.metrics import Metrics

    exported = Metrics().render()
    for series in re.findall(r"(realtime_\w+)\{", rule["metricsQuery"] + rule["seriesQuery"]):
        assert f"\n{series} " in "\n" + exported, series


# --- HAProxy ---------------------------------------------------------------------------------


def haproxy_check(text: str) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as config:
        config.write(text)
        config.flush()
        return subprocess.run(
            [tool("haproxy"), "-c", "-f", config.name], capture_output=True, text=True
        )


def test_the_haproxy_configuration_parses() -> None:
    result = haproxy_check(HAPROXY_CONFIG.read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_haproxy_configuration_with_dns_discovered_replicas_parses() -> None:
    doc = DEPLOY_DOC.read_text()
    resolvers = re.search(r"```\n(resolvers dns\n.*?)```", doc, re.S)
    templates = re.findall(r"^    (server-template .+)$", doc, re.M)
    assert resolvers is not None and len(templates) == 2
    text = HAPROXY_CONFIG.read_text()
    blocks = re.findall(r"    # --- replicas.*?\n(.*?)    # --- end of replicas ---\n", text, re.S)
    assert len(blocks) == len(templates)
    for block, template in zip(blocks, templates, strict=True):
        text = text.replace(block, f"    {template}\n", 1)
    result = haproxy_check(text + "\n" + resolvers.group(1))
    assert result.returncode == 0, result.stdout + result.stderr
