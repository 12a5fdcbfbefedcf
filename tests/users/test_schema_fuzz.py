"""The API against its own OpenAPI schema: schemathesis, as an outside client with a writer's
token, fuzzes every operation of `/api/schema/` on the production server (the Procfile's
uvicorn, this run's database) and checks every answer: no 5xx, only documented statuses,
content types and bodies.

`make fuzz` runs this test with more cases (FUZZ_MAX_EXAMPLES); the suite runs it with a count
that fits in a few seconds. The cases it found are kept in test_fuzz_regressions.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import WebServer

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# Per operation and phase: 250 make ~2,100 cases in ~35 s on a quiet machine here; the suite
# runs 50 (every operation and phase still covered), `make fuzz` 1,000.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "50"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
# At least this many cases generated: 1,000, or four per example asked for when fewer.
MIN_CASES = int(os.environ.get("FUZZ_MIN_CASES", str(min(1000, 4 * MAX_EXAMPLES))))
# Seconds the whole run may take before it counts as a failure (`make fuzz` raises it).
TIME_LIMIT = float(os.environ.get("FUZZ_TIME_LIMIT", "240"))
# A long run sends thousands of requests a minute from one account: raise the rate limits
# (their 429s are tested in tests/users/test_asgi.py and test_access.py, not here).
UNTHROTTLED = "1000000/minute"


@pytest.fixture(scope="module")
def fuzz_server(django_db_setup, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("fuzz-web") / "web.log"
    with WebServer(
        log_path, API_USER_THROTTLE_RATE=UNTHROTTLED, API_ANON_THROTTLE_RATE=UNTHROTTLED
    ) as server:
        yield server


def schemathesis_command(base: str, token: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base}/api/schema/",
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # A stream never ends and its body is events, not JSON: nothing schemathesis can check.
        # It stays in the schema; tests/users/test_sse.py and test_schema.py check it.
        "--exclude-path",
        "/users/sse",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--continue-on-failure",
        "--no-color",
        "--output-truncate",
        "false",
    ]


# Read by schemathesis from its working directory. GET /users answers a documented 503 when a
# query runs past API_QUERY_TIMEOUT_MS (users.selectors.bounded_read), which a fuzzed filter may
# on a loaded machine: that one is not a server error; any other 5xx still is.
CONFIG = """
[[operations]]
include-operation-id = "users_list"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


def test_every_operation_answers_as_its_schema_says(fuzz_server, api_token, tmp_path):
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    command = schemathesis_command(fuzz_server.base, api_token("writer"))
    try:
        run = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_LIMIT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran over {TIME_LIMIT:.0f} s:\n{(exc.stdout or '')[-5000:]}")
    output = run.stdout + run.stderr
    print(output)  # `make fuzz` shows it (pytest -s)
    generated = re.search(r"(\d+) generated", output)
    assert run.returncode == 0, output[-20000:]
    assert generated and int(generated[1]) >= MIN_CASES, output[-3000:]
    # An error a client caused is one log line, never a traceback.
    assert not client_tracebacks(fuzz_server.log())


# Tracebacks of a dependency going away (another test run restarting PostgreSQL or Redis on
# this machine) are logged on purpose; those are not the client's doing.
OUTAGE = re.compile(r"Connection refused|AdminShutdown|ConnectionError|OperationalError|"
                    r"shutting down|TimeoutError")  # fmt: skip


def client_tracebacks(log: str) -> list[str]:
    # Each traceback runs until the next timestamped log line.
    blocks = re.findall(r"Traceback \(most recent call last\):.*?(?=^\d{4}-\d\d-\d\d |\Z)", log,
                        flags=re.S | re.M)  # fmt: skip
    return [block for block in blocks if not OUTAGE.search(block)]
