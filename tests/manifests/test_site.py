"""manifests/site is the one place for the image and the NATS address."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.manifests import checks
from tests.manifests.kube import (
    MANIFESTS,
    OVERLAYS,
    SECURE_OVERLAYS,
    containers,
    render,
    workloads,
)

IMAGE = "ghcr.io/acme/surge"
TAG = "9.9.9"
NATS_HOST = "nats.messaging.svc.cluster.local"
NATS_ADDRESS = f"{NATS_HOST}:4333"


def edit_site(manifests: Path) -> tuple[str, str]:
    """Change the image and the NATS address in manifests/site; return the old values."""
    site = manifests / "site" / "kustomization.yaml"
    data = yaml.safe_load(site.read_text())
    (image,) = data["images"]
    old_image = image["newName"]
    image.update(newName=IMAGE, newTag=TAG)
    (generator,) = data["configMapGenerator"]
    (literal,) = generator["literals"]
    old_address = literal.removeprefix("nats-address=")
    generator["literals"] = [f"nats-address={NATS_ADDRESS}"]
    site.write_text(yaml.safe_dump(data))
    return old_image, old_address


def test_one_edit_reaches_every_overlay(tmp_path: Path) -> None:
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    old_image, old_address = edit_site(copy)
    old_host = old_address.partition(":")[0]
    for overlay in OVERLAYS:
        docs = render(copy / "overlays" / overlay)
        scheme = "tls" if overlay in SECURE_OVERLAYS else "nats"  # components/nats-auth
        images = {c["image"] for _, pod in workloads(docs) for c in containers(pod)}
        assert images == {f"{IMAGE}:{TAG}"}, overlay
        for _, pod in workloads(docs):
            for c in containers(pod):
                env = checks.container_env(docs, c)
                assert env["SURGE_NATS_URL"] == f"{scheme}://{NATS_ADDRESS}", (overlay, c["name"])
        (auth,) = [
            a
            for a in checks.find(docs, "TriggerAuthentication")
            if a["metadata"]["name"] == "surge-nats"
        ]
        (ref,) = [
            r for r in auth["spec"]["configMapTargetRef"] if r["key"] == "monitoring-endpoint"
        ]
        endpoint = checks.config_maps(docs)[ref["name"]]["monitoring-endpoint"]
        assert endpoint == f"{NATS_HOST}:8222", overlay
        text = json.dumps(docs)
        assert old_image not in text, overlay
        assert old_host not in text, overlay
