"""Regenerate the upstream JSON Schemas that the manifest tests validate against.

Run by hand when bumping KEDA, Knative Serving or NACK (the tests never run it):

    .venv/bin/python manifests/schemas/refresh.py               # GitHub, pinned tags
    .venv/bin/python manifests/schemas/refresh.py --tag kedacore/keda=v2.21.0
    .venv/bin/python manifests/schemas/refresh.py --clone knative/serving=../serving
    .venv/bin/python manifests/schemas/refresh.py --check       # exit 1 if a file would change

Each `*.strict.json` is rebuilt from the upstream CustomResourceDefinition: the
`openAPIV3Schema` of the version that is served and stored, OpenAPI `nullable` as a
JSON-Schema `null` type, and `additionalProperties: false` on every object that
declares `properties` and says nothing about other fields (what
`kubectl apply --validate=strict` rejects), `apiVersion`, `kind` and `metadata` on
the root where the CRD leaves them out.

The `keda-trigger-*.metadata.json` files are curated by hand (patterns, required keys,
notes): the script compares their keys with KEDA's generated scalers schema and
prints any drift for a person to resolve; it never rewrites them. After a bump, update
the versions in README.md beside this file.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

HERE: Final = Path(__file__).resolve().parent

# Upstream repository -> the tag the schemas come from.
PINNED: Final = {
    "kedacore/keda": "v2.20.2",
    "knative/serving": "knative-v1.23.0",
    "nats-io/nack": "v0.22.4",
}


@dataclass(frozen=True)
class Crd:
    """One schema file and the CustomResourceDefinition it is generated from."""

    file: str
    repo: str
    path: str
    name: str


CRDS: Final = (
    Crd(
        "ScaledObject.strict.json",
        "kedacore/keda",
        "config/crd/bases/keda.sh_scaledobjects.yaml",
        "scaledobjects.keda.sh",
    ),
    Crd(
        "TriggerAuthentication.strict.json",
        "kedacore/keda",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
        "triggerauthentications.keda.sh",
    ),
    Crd(
        "KnativeService.strict.json",
        "knative/serving",
        "config/core/300-resources/service.yaml",
        "services.serving.knative.dev",
    ),
    Crd("NackStream.strict.json", "nats-io/nack", "deploy/crds.yml", "streams.jetstream.nats.io"),
    Crd(
        "NackConsumer.strict.json",
        "nats-io/nack",
        "deploy/crds.yml",
        "consumers.jetstream.nats.io",
    ),
)

ROOT_FIELDS: Final = {"apiVersion": "string", "kind": "string", "metadata": "object"}

# KEDA trigger types whose `metadata` map has a curated schema here.
TRIGGER_TYPES: Final = ("nats-jetstream", "external-push")
SCALERS_SCHEMA: Final = "schema/generated/scalers-schema.json"


class Upstream:
    """Files of one repository at one tag, from GitHub or from a local clone."""

    def __init__(self, repo: str, tag: str, clone: Path | None) -> None:
        self.repo = repo
        self.tag = tag
        self.clone = clone

    def _git(self, *args: str) -> bytes:
        assert self.clone is not None
        return subprocess.run(
            ["git", "-C", str(self.clone), *args], capture_output=True, check=True
        ).stdout

    def _get(self, url: str, accept: str | None = None) -> bytes:
        request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(request, timeout=60) as response:
            body: bytes = response.read()
        return body

    def read(self, path: str) -> bytes:
        """The file at `path`; FileNotFoundError if this tag has none."""
        try:
            if self.clone is not None:
                return self._git("show", f"{self.tag}:{path}")
            return self._get(f"https://raw.githubusercontent.com/{self.repo}/{self.tag}/{path}")
        except (subprocess.CalledProcessError, urllib.error.HTTPError) as error:
            raise FileNotFoundError(f"{self.repo}@{self.tag}: {path}: {error}") from error

    def commit(self) -> str:
        if self.clone is not None:
            return self._git("rev-parse", f"{self.tag}^{{commit}}").decode().strip()
        url = f"https://api.github.com/repos/{self.repo}/commits/{self.tag}"
        return self._get(url, "application/vnd.github.sha").decode().strip()


def _nullable(node: Any) -> Any:
    """OpenAPI v3.0 `nullable: true` as JSON Schema: `null` joins the allowed types."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and "type" in out:
        kind = out["type"]
        out["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    return out


def _strict(node: Any) -> Any:
    """`additionalProperties: false` wherever an object lists its properties and no more."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    open_ = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_:
        out["additionalProperties"] = False
    return out


def crd_schema(crd: Crd, upstream: Upstream, commit: str) -> dict[str, Any]:
    """The strict JSON Schema for the served and stored version of one CRD."""
    docs = [doc for doc in yaml.safe_load_all(upstream.read(crd.path)) if doc]
    (definition,) = [doc for doc in docs if doc.get("metadata", {}).get("name") == crd.name]
    spec = definition["spec"]
    (version,) = [v for v in spec["versions"] if v.get("served") and v.get("storage")]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # Every object has these, whether or not the CRD's schema lists them.
    for field, kind in ROOT_FIELDS.items():
        schema.setdefault("properties", {}).setdefault(field, {"type": kind})
    schema = _strict(_nullable(schema))
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"{spec['names']['kind']} ({spec['group']}/{version['name']})",
        "x-source": f"{crd.repo}@{upstream.tag} ({commit}) {crd.path}",
        "x-crd": crd.name,
        "x-version": version["name"],
        "x-served": True,
        "x-storage": True,
        **schema,
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, ensure_ascii=False)


def trigger_drift(scalers: dict[str, Any], tag: str) -> list[str]:
    """Differences between the curated trigger schemas and KEDA's list of parameters."""
    by_type = {scaler["type"]: scaler["parameters"] for scaler in scalers["scalers"]}
    notes = []
    for kind in TRIGGER_TYPES:
        file = f"keda-trigger-{kind}.metadata.json"
        curated = json.loads((HERE / file).read_text())
        if f"KEDA {tag}" not in curated.get("title", ""):
            notes.append(f"{file}: title does not name KEDA {tag}")
        if kind not in by_type:
            notes.append(f"{file}: KEDA {tag} has no {kind!r} scaler")
            continue
        upstream = {p["name"] for p in by_type[kind] if p.get("metadataVariableReadable")}
        ours = set(curated.get("properties", {}))
        for name in sorted(upstream - ours):
            notes.append(f"{file}: KEDA {tag} reads metadata {name!r}, not in the schema")
        for name in sorted(ours - upstream):
            notes.append(f"{file}: {name!r} is no longer a metadata parameter in KEDA {tag}")
    return notes


def _pairs(values: Iterable[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        repo, sep, rest = value.partition("=")
        if not sep or repo not in PINNED:
            raise SystemExit(f"{flag} {value!r}: want REPO=VALUE with REPO one of {list(PINNED)}")
        pairs[repo] = rest
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tag", action="append", default=[], metavar="REPO=TAG", help="override a pinned tag"
    )
    parser.add_argument(
        "--clone",
        action="append",
        default=[],
        metavar="REPO=DIR",
        help="read REPO from a local git clone instead of GitHub",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: here)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file would change"
    )
    args = parser.parse_args(argv)
    tags = {**PINNED, **_pairs(args.tag, "--tag")}
    clones = {repo: Path(d) for repo, d in _pairs(args.clone, "--clone").items()}
    upstreams = {repo: Upstream(repo, tag, clones.get(repo)) for repo, tag in tags.items()}
    commits = {repo: upstream.commit() for repo, upstream in upstreams.items()}

    stale = []
    for crd in CRDS:
        text = render(crd_schema(crd, upstreams[crd.repo], commits[crd.repo]))
        target = args.out / crd.file
        if target.exists() and target.read_text() == text:
            print(f"unchanged  {crd.file}")
            continue
        stale.append(crd.file)
        if args.check:
            print(f"differs    {crd.file}")
        else:
            target.write_text(text)
            print(f"written    {crd.file} ({len(text.encode())} bytes)")

    keda = upstreams["kedacore/keda"]
    try:
        drift = trigger_drift(json.loads(keda.read(SCALERS_SCHEMA)), keda.tag)
    except FileNotFoundError as error:
        drift = [f"compare keda-trigger-*.metadata.json with the scalers by hand ({error})"]
    for note in drift:
        print(f"curate     {note}")
    return 1 if (args.check and stale) or drift else 0


if __name__ == "__main__":
    sys.exit(main())
