"""Fixtures of the multi-node tests (`make test-cluster`): database clusters of their own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cluster.postgres import PostgresPair, postgres_bin
from tests.cluster.redis_sentinel import RedisSentinelGroup
from tests.support.environment import ROOT, subprocess_env


@pytest.fixture(scope="session")
def postgres_pair():
    """A primary and a streaming replica of their own, migrated; stopped and deleted after."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("initdb not found (/usr/lib/postgresql/*/bin or PATH): no replica cluster")
    pair = PostgresPair(bin_dir)
    try:
        pair.start()
        env = subprocess_env(DATABASE_URL=pair.primary_url, DATABASE_REPLICA_URLS="")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="session")
def cluster_tokens(postgres_pair) -> dict[str, str]:
    """A reader's and a writer's API token in the pair's database."""
    code = (
        "from users.services import api_client_create as make; "
        "print(make(name='cluster-reader', role='reader', expires_days=1)[1]); "
        "print(make(name='cluster-writer', role='writer', expires_days=1)[1])"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT, env=subprocess_env(DATABASE_URL=postgres_pair.primary_url),
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    reader, writer = result.stdout.split()[-2:]
    return {"reader": reader, "writer": writer}


@pytest.fixture(scope="module")
def redis_sentinels():
    """A Redis primary and replica with three Sentinels of their own; stopped and deleted after."""
    group = RedisSentinelGroup()
    try:
        group.start()
        yield group
    finally:
        group.stop()
