"""Fixtures for the manifest tests: rendered overlays (once per session)."""

from __future__ import annotations

import pytest

from tests.manifests.kube import OVERLAYS, TENANTS_COMPONENT, Doc, render_overlay, rendered


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def docs(overlay: str) -> tuple[Doc, ...]:
    """The overlay's rendered documents (shared across tests: do not mutate)."""
    return rendered(overlay)


@pytest.fixture(scope="session")
def knative_tenants(tmp_path_factory: pytest.TempPathFactory) -> tuple[Doc, ...]:
    """The knative overlay with components/tenants only (no nats-auth)."""
    kustomization = {"resources": ["../knative"], "components": [TENANTS_COMPONENT]}
    folder = tmp_path_factory.mktemp("tenants")
    return tuple(render_overlay(folder, "knative-tenants", kustomization))
