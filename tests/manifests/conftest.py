"""Fixtures for the manifest tests: rendered overlays (once per session)."""

from __future__ import annotations

import pytest

from tests.manifests.kube import OVERLAYS, Doc, rendered


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def docs(overlay: str) -> tuple[Doc, ...]:
    """The overlay's rendered documents (shared across tests: do not mutate)."""
    return rendered(overlay)
