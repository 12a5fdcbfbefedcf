"""The service across hosts: network namespaces with addresses of their own on a bridge
(tests/cluster/hosts.py), each running what a host of a deployment runs.

    db1  PostgreSQL primary, Redis primary, Sentinel, RabbitMQ node
    db2  PostgreSQL streaming replica, Redis replica, Sentinel, RabbitMQ node
    db3  Sentinel, RabbitMQ node
    web1, web2  the Procfile's web command (uvicorn)
    wk1, wk2    the Procfile's worker command (celery), every RabbitMQ node's URL
    cl   the clients (tests/cluster/across_hosts_client.py): publish_csv, readers, the stream

200k rows are published; meanwhile a RabbitMQ node is stopped, the Redis primary killed
(Sentinel fails over) and the PostgreSQL replica stopped and started again. The windows the
faults caused are measured and printed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.cluster.hosts import HostPostgres, HostRabbit, HostRedis, Hosts
from tests.support.environment import ROOT, RUN_ID, subprocess_env

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

ROWS = 200_000
BATCH = 2_000
# A read that failed this long after a fault began still counts as the fault's (a window).
WINDOW_SLACK = 15.0


# Run on the client host: wait until a web host answers /healthz.
HEALTHY = """
import sys, time, httpx
for _ in range(300):
    try:
        httpx.get(sys.argv[1], timeout=1).raise_for_status()
        break
    except Exception:
        time.sleep(0.1)
else:
    raise SystemExit(1)
"""


def _keep_logs(hosts: Hosts, into) -> None:
    """The hosts' logs, kept in the test's own temporary directory (pytest keeps the last few)."""
    into.mkdir(exist_ok=True)
    for pattern in ("*.log", "*.out", "pg/*.log", "redis-*/log", "rabbit/*.out", "results.json"):
        for path in hosts.base.glob(pattern):
            shutil.copy(path, into / "-".join(path.relative_to(hosts.base).parts))


def _skip_unless_possible() -> None:
    if shutil.which("ip") is None or shutil.which("redis-server") is None:
        pytest.skip("needs ip (iproute2) and redis-server")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("ip netns is not available here (needs root)")


def _wait_for_rows(progress, rows: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(progress.read_text() or 0) >= rows:
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"the table did not reach {rows} rows")


def _windows(failures: list[float], gap: float = 3.0) -> list[tuple[float, float]]:
    """Failure times grouped into windows (a gap longer than `gap` starts another)."""
    out: list[list[float]] = []
    for at in sorted(failures):
        if out and at - out[-1][1] <= gap:
            out[-1][1] = at
        else:
            out.append([at, at])
    return [(start, end) for start, end in out]


def test_the_service_across_hosts_survives_losing_a_node_of_each_kind(tmp_path, capsys):
    _skip_unless_possible()
    test_started = time.monotonic()
    hosts = Hosts(["db1", "db2", "db3", "web1", "web2", "wk1", "wk2", "cl"])
    address = hosts.address
    faults: dict[str, float] = {}
    try:
        hosts.start()
        postgres = HostPostgres(hosts, "db1", "db2")
        redis = HostRedis(hosts, ["db1", "db2"], ["db1", "db2", "db3"])
        rabbit = HostRabbit(hosts, ["db1", "db2", "db3"])
        redis.start()
        rabbit.start()
        postgres.start()
        cluster_up = time.monotonic() - test_started

        queue = f"ingest-{RUN_ID}-hosts"
        common = subprocess_env(
            DATABASE_URL=postgres.url("db1"),
            REDIS_URL="redis://redis.invalid:6379/0",
            REDIS_SENTINELS=redis.sentinel_setting(),
            REDIS_SENTINEL_MASTER=HostRedis.MASTER,
            INGEST_QUEUE=queue,
            INGEST_QUEUE_TYPE="quorum",
            CELERY_BROKER_URL=";".join(rabbit.url(host) for host in rabbit.nodes),
            DJANGO_ALLOWED_HOSTS=f"{address['web1']},{address['web2']}",
            API_USER_THROTTLE_RATE="1000000/minute",
            LOG_LEVEL="INFO",
        )
        hosts.run("cl", [sys.executable, "manage.py", "migrate", "--noinput"], env=common)
        code = (
            "from users.services import api_client_create as make; "
            "print(make(name='hosts-reader', role='reader', expires_days=1)[1]); "
            "print(make(name='hosts-writer', role='writer', expires_days=1)[1])"
        )
        shell = hosts.run("cl", [sys.executable, "manage.py", "shell", "-c", code], env=common)
        reader, writer = shell.stdout.split()[-2:]

        web_env = {**common, "DATABASE_REPLICA_URLS": postgres.url("db2"), "PORT": "8080",
                   "WEB_CONCURRENCY": "1", "PATH": f"{sys.prefix}/bin:/usr/bin:/bin"}  # fmt: skip
        webs = []
        for host in ("web1", "web2"):
            env = {
                **web_env,
                "HOST": address[host],
                "PROMETHEUS_MULTIPROC_DIR": str(hosts.base / host),
            }
            hosts.spawn(
                host, ["sh", "scripts/web.sh"], hosts.base / f"{host}.log", env=env, cwd=ROOT
            )
            webs.append(f"http://{address[host]}:8080")
        for host, first in (("wk1", 0), ("wk2", 1)):
            # Every node's URL, each worker host's list starting at another node: wk2's first,
            # db2, is the node stopped below.
            nodes = rabbit.nodes[first:] + rabbit.nodes[:first]
            env = {**common, "CELERY_BROKER_URL": ";".join(rabbit.url(node) for node in nodes)}
            argv = [sys.executable, "-m", "celery", "-A", "viswals", "worker", "-Q", queue,
                    "-c", "1", "--loglevel", "INFO", "-n", f"{host}@%h"]  # fmt: skip
            hosts.spawn(host, argv, hosts.base / f"{host}.log", env=env, cwd=ROOT)
        for base in webs:
            hosts.run("cl", [sys.executable, "-c", HEALTHY, f"{base}/healthz"], timeout=60)

        data = hosts.base / "users.csv"
        subprocess.run([sys.executable, "data/generate_users.py", "--rows", str(ROWS), "--seed",
                        "22", "--output", str(data)], cwd=ROOT, check=True)  # fmt: skip
        config = {
            "webs": webs, "reader": reader, "writer": writer, "file": str(data),
            "batch_size": BATCH, "max_id": ROWS, "env": common, "database": postgres.url("db1"),
            "progress": str(hosts.base / "progress"), "stop": str(hosts.base / "stop"),
            "results": str(hosts.base / "results.json"),
        }  # fmt: skip
        (hosts.base / "config.json").write_text(json.dumps(config))
        client = hosts.spawn(
            "cl", [sys.executable, "-m", "tests.cluster.across_hosts_client",
                   str(hosts.base / "config.json")],
            hosts.base / "client.log", env=common, cwd=ROOT,
        )  # fmt: skip
        progress = hosts.base / "progress"

        _wait_for_rows(progress, ROWS // 10)
        faults["rabbitmq node stopped"] = time.monotonic()
        rabbit.stop_node("db2")
        _wait_for_rows(progress, ROWS * 3 // 10)
        faults["redis primary killed"] = time.monotonic()
        redis.kill_primary()
        _wait_for_rows(progress, ROWS * 5 // 10)
        faults["postgres replica stopped"] = time.monotonic()
        postgres.stop_replica()
        time.sleep(3)
        postgres.start_replica()
        faults["postgres replica started"] = time.monotonic()

        (hosts.base / "stop").write_text("")
        client.wait(timeout=900)
        log = (hosts.base / "client.log").read_text(errors="replace")
        assert client.returncode == 0, log[-3000:]
        results = json.loads((hosts.base / "results.json").read_text())
        report = _report(results, faults, cluster_up, time.monotonic() - test_started)
        with capsys.disabled():
            print("\n" + "\n".join(report))

        assert results["publish"]["returncode"] == 0, results["publish"]["output"]
        table = results["table_matches_file"]
        assert table["missing_or_different"] == 0 and table["extra"] == 0, table
        assert results["reads_agree"]["count"] == 0, results["reads_agree"]
        assert results["read_your_write"]["ok"], results["read_your_write"]
        _assert_reads_failed_only_around_faults(results, faults)
        _assert_stream_complete_or_reset(results)
        # The worker whose node stopped moved to the next one and took batches there.
        worker_log = (hosts.base / "wk2.log").read_text(errors="replace")
        assert "Will retry using next failover" in worker_log, worker_log[-3000:]
        after = worker_log.rsplit("Will retry using next failover", 1)[1]
        assert " succeeded in " in after, worker_log[-3000:]
    finally:
        _keep_logs(hosts, tmp_path / "hosts")
        hosts.stop()


def _failures(results: dict) -> list[tuple[float, str, str]]:
    return [
        (at, base, f"{what} {status}")
        for base, log in results["reads"].items()
        for at, what, status in log
        if status not in ((200,) if what == "list" else (200, 404))  # an id the file skips
    ]


def _assert_reads_failed_only_around_faults(results: dict, faults: dict[str, float]) -> None:
    starts = sorted(faults.values())
    outside = [
        failure for failure in _failures(results)
        if not any(start <= failure[0] <= start + WINDOW_SLACK for start in starts)
    ]  # fmt: skip
    assert not outside, f"reads failed outside the faults' windows: {outside[:5]}"


def _assert_stream_complete_or_reset(results: dict) -> None:
    """Within an epoch the ids follow on one by one, except right after a stream-reset."""
    previous = None
    for _, kind, event_id in results["stream"]["events"]:
        if not event_id or kind == "stream-open":
            continue
        epoch_number = event_id.rpartition("@")[2]
        epoch, _, number = epoch_number.partition(":")
        if kind == "stream-reset" or previous is None:
            previous = (epoch, int(number))
            continue
        assert epoch == previous[0], f"another epoch without a stream-reset: {event_id}"
        assert int(number) == previous[1] + 1, f"a gap in the stream: {previous} then {event_id}"
        previous = (epoch, int(number))


def _report(results: dict, faults: dict[str, float], cluster_up: float, total: float) -> list:
    lines = [f"across hosts: cluster up in {cluster_up:.1f}s, test ran {total:.1f}s"]
    for start, end in _windows([at for at, _, _ in _failures(results)]):
        near = min(faults, key=lambda name: abs(faults[name] - start))
        lines.append(f"  reads failed for {end - start:.2f}s (from {start - faults[near]:+.1f}s "
                     f"after '{near}')")  # fmt: skip
    reads = sum(len(log) for log in results["reads"].values())
    lines.append(f"  reads: {reads}, failed: {len(_failures(results))}")
    events = [e for e in results["stream"]["events"] if e[1] != "stream-open"]
    killed = faults["redis primary killed"]
    resets = [at for at, kind, _ in events if kind == "stream-reset"]
    if resets:
        lines.append(f"  stream: stream-reset {resets[0] - killed:.2f}s after the Redis kill")
    during = [at for at, _, _ in events if at <= results["published_at"]]
    gaps = [later - earlier for earlier, later in zip(during, during[1:], strict=False)]
    if gaps:
        lines.append(f"  stream: longest gap between events while publishing {max(gaps):.2f}s")
    batches = sum(1 for _, kind, _ in events if kind == "users.ingested")
    lines.append(f"  stream: {len(events)} events ({batches} users.ingested of {ROWS // BATCH} "
                 f"batches), {len(resets)} stream-reset, "
                 f"{len(results['stream']['drops'])} reconnects")  # fmt: skip
    samples = results["progress"]
    pauses = []
    for name, at in faults.items():
        before = [rows for t, rows in samples if t <= at]
        if not before:
            continue
        moved = next((t for t, rows in samples if t > at and rows > before[-1]), None)
        if moved is not None:
            pauses.append(f"{name}: {moved - at:.2f}s")
    lines.append(
        "  ingest paused after each fault (until the table grew again): " + ", ".join(pauses)
    )
    lines.append(f"  read-your-write across web hosts: {results['read_your_write']}")
    return lines
