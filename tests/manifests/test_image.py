"""The container recipe agrees with the manifests, and nothing secret is kept in files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.manifests import checks, contract
from tests.manifests.kube import REPO, containers, rendered, workloads

CONTAINERFILE = REPO / "Containerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def build_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def test_multi_stage_on_the_cuda_runtime() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) >= 2
    base = stages[-1].split()[0]
    image = build_args(steps).get(base.strip("${}"), base)
    assert "nvidia/cuda" in image
    assert "cudnn-runtime" in image


def test_runs_as_the_manifests_non_root_user() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    (user,) = [rest for word, rest in steps if word == "USER"]
    uid_text = user.split(":")[0]
    if uid_text.startswith("$"):
        uid_text = build_args(steps)[uid_text.strip("${}")]
    uid = int(uid_text)
    assert uid != 0
    for overlay in ("knative", "raw"):
        for workload, pod in workloads(rendered(overlay)):
            for c in containers(pod):
                ctx = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
                assert ctx.get("runAsUser") == uid, (workload["metadata"]["name"], c["name"])


def test_entrypoint_and_settings() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    (entrypoint,) = [rest for word, rest in steps if word == "ENTRYPOINT"]
    assert entrypoint == '["surge"]'
    exposed = {int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert {contract.HTTP_PORT, contract.SCALER_GRPC_PORT} <= exposed
    env_names = {
        m.group(1) for word, rest in steps if word == "ENV" for m in re.finditer(r"(\w+)=", rest)
    }
    surge_env = {n for n in env_names if n.startswith("SURGE_")}
    assert surge_env <= checks.SETTINGS_ENV
    settings = checks.worker_settings(rendered("knative"))
    assert f"SURGE_MODEL_DIR={settings.model_dir}" in CONTAINERFILE.read_text()


def test_copied_sources_exist_and_are_not_ignored() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                if "*" not in source:
                    assert (REPO / source).exists(), source
                    assert source not in ignored, source
    assert {".git", ".venv", "tests", "manifests"} <= ignored


SECRET_PATTERNS = {
    "password literal": re.compile(r"(?i)\bpass(word)?\s*[:=]\s*['\"]?[^\s'\"$]{3,}"),
    "token literal": re.compile(
        r"(?i)\b(token|secret|api_?key)\s*[:=]\s*['\"]?[A-Za-z0-9+/_=-]{20,}"
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "NATS nkey seed": re.compile(r"\bS[UAO][A-Z2-7]{56}\b"),
    "credentials in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]+@"),
    "Secret object": re.compile(r"(?m)^kind:\s*Secret\s*$"),
}


def _files() -> list[Path]:
    files = [p for p in (REPO / "manifests").rglob("*") if p.is_file()]
    return [*files, CONTAINERFILE, DOCKERIGNORE]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_secret_in_files(path: Path) -> None:
    text = path.read_text()
    found = [what for what, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    assert found == []


def test_secret_patterns_work() -> None:
    samples = {
        "password literal": "password: hunter22",
        "token literal": "token=abcdefgh12345678ABCDEFGH",
        "private key": "-----BEGIN RSA PRIVATE KEY-----",
        "NATS nkey seed": "SU" + "A" * 56,
        "credentials in a URL": "nats://user:pw@nats:4222",
        "Secret object": "apiVersion: v1\nkind: Secret\n",
    }
    for what, sample in samples.items():
        assert SECRET_PATTERNS[what].search(sample), what
