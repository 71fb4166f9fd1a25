"""Docker fixtures for the TAO tests: the local stand-in image and a leak check for containers."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import require_docker_engine


@pytest.fixture(scope="session")
def docker_client():
    require_docker_engine()
    import docker

    return docker.from_env(timeout=60)


@pytest.fixture(scope="session")
def standin_image(docker_client) -> str:
    from tests.tao.standin.build import DEFAULT_TAG, StandinError, build

    # HACKATHON_STANDIN_TAG: a tag of one's own when several checkouts share one docker engine
    tag = os.environ.get("HACKATHON_STANDIN_TAG") or DEFAULT_TAG
    try:
        return build(tag, client=docker_client, echo=lambda *_: None)
    except StandinError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def test_label(docker_client):
    """A label unique to one test; after the test no container may carry it (no orphans)."""
    value = uuid.uuid4().hex[:12]
    yield {"hackathon.test": value}
    left = docker_client.containers.list(all=True, filters={"label": f"hackathon.test={value}"})
    for c in left:
        c.remove(force=True)
    assert not left, f"containers left behind: {[c.short_id for c in left]}"
