"""The deployment files stay valid and agree with each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.environment import random_secret_key

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2) if it answers, else Debian's `docker-compose`, else None."""
    if shutil.which("docker") and (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE_CLI = _compose_cli()
needs_compose_cli = pytest.mark.skipif(
    COMPOSE_CLI is None,
    reason="neither `docker compose` nor `docker-compose` is installed (make system-deps)",
)
# Variables the compose file reads: none of them may leak in from the shell running the tests.
COMPOSE_VARIABLES = {
    *re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()),
}


def compose_config(project: Path) -> dict:
    """`compose config` of a copy of the compose file in PROJECT (beside whatever .env is
    there), with none of its variables in the environment; the resolved file."""
    shutil.copy(ROOT / "docker-compose.yml", project / "docker-compose.yml")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    result = subprocess.run(
        [*COMPOSE_CLI, "config"], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@needs_compose_cli
def test_compose_config_is_valid_in_a_fresh_clone_without_env_file(tmp_path):
    services = compose_config(tmp_path)["services"]

    for name in ("setup", "web", "worker", "publish"):
        environment = services[name]["environment"]
        # Not required: the entrypoint exports the ones `setup` made.
        assert environment["DJANGO_SECRET_KEY"] == "" and environment["METRICS_TOKEN"] == ""
    port = services["web"]["ports"][0]  # "8080:8080" (docker-compose 1.x) or a mapping (v2)
    assert (port.split(":")[0] if isinstance(port, str) else str(port["published"])) == "8080"


@needs_compose_cli
def test_compose_takes_secrets_from_env_file(tmp_path):
    key = random_secret_key()
    (tmp_path / ".env").write_text(f"DJANGO_SECRET_KEY={key}\nMETRICS_TOKEN={'t' * 32}\n")

    services = compose_config(tmp_path)["services"]

    for name in ("setup", "web", "worker", "publish"):
        assert services[name]["environment"]["DJANGO_SECRET_KEY"] == key
        assert services[name]["environment"]["METRICS_TOKEN"] == "t" * 32


def test_compose_setup_runs_first_and_every_app_service_reads_its_volume():
    services = compose()["services"]
    setup = services["setup"]
    assert setup["command"][:2] == ["sh", "scripts/first-start.sh"]
    assert setup["restart"] == "no"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["setup"] == {
            "condition": "service_completed_successfully"
        }
    for name in ("setup", "web", "worker", "publish"):
        assert "state:/var/lib/viswals" in services[name]["volumes"], name
    assert "state" in compose()["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sh", "scripts/entrypoint.sh"]' in dockerfile
    assert "ENV VISWALS_STATE_DIR=/var/lib/viswals" in dockerfile
    # A healthcheck is run by `exec`, which bypasses the entrypoint.
    assert "sh scripts/entrypoint.sh celery" in services["worker"]["healthcheck"]["test"][1]


def test_compose_runs_the_whole_stack_with_healthchecks():
    services = compose()["services"]
    assert {"postgres", "redis", "rabbitmq", "web", "worker", "publish"} <= set(services)
    for name in ("postgres", "redis", "rabbitmq"):
        assert "healthcheck" in services[name], name
    for name in ("web", "worker", "publish"):
        depends = services[name]["depends_on"]
        for dependency in ("postgres", "redis", "rabbitmq"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
    assert services["web"]["ports"] == ["${PORT:-8080}:8080"]
    # Scalable: no fixed container name or host port on the worker.
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_compose_and_dockerfile_run_the_procfile_commands():
    web, worker = procfile()["web"], procfile()["worker"]
    assert web == "sh scripts/web.sh"
    web_script = (ROOT / "scripts" / "web.sh").read_text()
    assert (
        'exec uvicorn viswals.asgi:application --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}"'
        in web_script
    )
    assert "--lifespan off" in web_script  # Django has no lifespan handler: no warning per worker
    assert worker.startswith("celery -A viswals worker")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["sh", "scripts/web.sh"]' in dockerfile
    assert "ENV HOST=0.0.0.0" in dockerfile  # loopback on a laptop, every interface in a container
    compose_worker = compose()["services"]["worker"]["command"][-1].replace("$$", "$")
    assert compose_worker == worker


@pytest.fixture
def web_script_run(tmp_path):
    """Run scripts/web.sh with a stand-in `uvicorn` that prints the metrics directory it was
    given; return (that directory, the script's process id)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "uvicorn"
    stand_in.write_text('#!/bin/sh\necho "$PROMETHEUS_MULTIPROC_DIR $$"\n')
    stand_in.chmod(0o755)

    def run(**env: str) -> tuple[Path, int]:
        result = subprocess.run(
            ["sh", str(ROOT / "scripts" / "web.sh")],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), **env},
            capture_output=True,
            text=True,
            check=True,
        )
        directory, pid = result.stdout.split()
        return Path(directory), int(pid)

    return run


def test_web_script_gives_each_server_a_metrics_directory_of_its_own(web_script_run, tmp_path):
    servers = tmp_path / f"viswals-metrics-{os.getuid()}"
    running = str(os.getpid())  # stands for a running server: kept
    (servers / running).mkdir(parents=True)
    exited = subprocess.Popen(["true"])
    exited.wait()
    (servers / str(exited.pid)).mkdir()  # a server that has exited: removed

    directory, pid = web_script_run()

    assert directory == servers / str(pid)  # exec keeps the pid: uvicorn's supervisor's
    assert directory.is_dir()
    assert sorted(p.name for p in servers.iterdir()) == sorted([running, str(pid)])


def test_web_script_empties_a_given_metrics_directory(web_script_run, tmp_path):
    given = tmp_path / "prometheus"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old")
    (given / "keep.txt").write_text("not ours")

    directory, _ = web_script_run(PROMETHEUS_MULTIPROC_DIR=str(given))

    assert directory == given
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]
    web_script_run(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    assert (tmp_path / "missing").is_dir()


@needs_compose_cli
def test_the_replicated_compose_example_is_valid(tmp_path):
    """docker-compose.replicated.yml: the replicated topology's example (docs/deployment.md)."""
    shutil.copy(ROOT / "docker-compose.replicated.yml", tmp_path / "docker-compose.yml")
    (tmp_path / "scripts" / "compose").mkdir(parents=True)
    result = subprocess.run(
        [*COMPOSE_CLI, "config"], cwd=tmp_path, env=os.environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    web = services["web"]["environment"]
    assert web["DATABASE_REPLICA_URLS"] and web["INGEST_QUEUE_TYPE"] == "quorum"
    assert web["REDIS_SENTINELS"].count(":26379") == 3
    assert {"postgres-replica", "redis-replica", "sentinel-3", "rabbit-3"} <= set(services)
