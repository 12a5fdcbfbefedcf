"""Search benchmark: every query shape of `GET /users` and of the users admin, at two sizes.

For each size (default 500,000 and 5,000,000 users) it
  1. generates the users with data/generate_users.py (into --data-dir, /tmp by default; a file
     already there is reused) and loads them with `publish_csv --wait` and a Celery worker into
     a scratch database of its own (`viswals_search<size>`; `--keep` leaves it, `--reuse` loads
     into it only if it is missing, then migrates it);
  2. starts the Procfile's web server (scripts/web.sh, 2 workers) on a loopback port, with a
     reader's API token and a superuser's admin session;
  3. times every shape of SHAPES, one client, sequential requests after one untimed warm-up,
     `--samples` per shape (fewer when a shape needs more than `--budget` seconds);
and prints p50/p95 per shape and size, each shape's p95 against the unfiltered first page
(API shapes) or the plain admin list (admin shapes), its p50 growth from the first size to
the last, the status codes seen, and EXPLAIN (ANALYZE, BUFFERS) of the slowest query of the
worst shape at the largest size.

Targets (the issue "ten times the users"): API shapes p95 <= 10x the unfiltered first page and
p50 growth <= 2x; admin pages p95 <= 5x the plain list page and growth <= 2x.

Usage: python bench/bench_search.py [--sizes 500000,5000000] [--samples 15] [--keep] [--reuse]
[--only SUBSTRING ...] (`make bench-search`). A smoke run: --sizes 20000,50000 --samples 3.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scratch import PY, ROOT, Scratch, free_port, generate_users, start_web_server  # noqa: E402

READER = "bench-search-reader"
ADMIN = "bench-search-admin"
API_BASELINE = "API first page, no filter"
ADMIN_BASELINE = "admin list, no filter"
SERVER_ENV = {
    # The throttles run but never refuse the benchmark's client.
    "API_ANON_THROTTLE_RATE": "1000000000/minute",
    "API_USER_THROTTLE_RATE": "1000000000/minute",
}


@dataclass
class Shape:
    label: str
    kind: str  # "api" or "admin"
    paths: list[str]
    # Statuses that count as an answer: 400 where a value is refused by design (too short).
    accepted: tuple[int, ...] = (200,)


@dataclass
class Result:
    times: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def p50(self) -> float:
        return statistics.median(self.times)

    @property
    def p95(self) -> float:
        ordered = sorted(self.times)
        return ordered[max(0, round(len(ordered) * 0.95) - 1)]


def cursor(key: list, back: bool = False) -> str:
    """A keyset cursor as users.api.pagination writes it."""
    raw = json.dumps({"k": key, "b": back}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def q(value: str) -> str:
    return quote(value, safe="")


def query_shapes(values: dict) -> list[Shape]:
    """Every shape timed. `values`: what the data offers (see `shape_values`): an existing
    user's id, cursors in the middle of the table for the deep pages."""
    api = [
        Shape(API_BASELINE, "api", ["/users"]),
        Shape("ordering=-id", "api", ["/users?ordering=-id"]),
        Shape("ordering=created_at", "api", ["/users?ordering=created_at"]),
        Shape("ordering=-created_at", "api", ["/users?ordering=-created_at"]),
        Shape("ordering=last_name", "api", ["/users?ordering=last_name"]),
        Shape("ordering=-last_name", "api", ["/users?ordering=-last_name"]),
        Shape("last_name=Smith", "api", ["/users?last_name=Smith"]),
        Shape("last_name=Smith&ordering=last_name", "api",
              ["/users?last_name=Smith&ordering=last_name"]),
        Shape("last_name=Robinson&ordering=-last_name", "api",
              ["/users?last_name=Robinson&ordering=-last_name"]),
        Shape("last_name=smith&ordering=-created_at", "api",
              ["/users?last_name=smith&ordering=-created_at"]),
        Shape("last_name=<none>&ordering=last_name", "api",
              ["/users?last_name=Nobodyhere&ordering=last_name"]),
        Shape("last_name=Li (2 letters)&ordering=created_at", "api",
              ["/users?last_name=Li&ordering=created_at"]),
        Shape("first_name=Ashley", "api", ["/users?first_name=Ashley"]),
        Shape("first_name=Ashley&ordering=last_name", "api",
              ["/users?first_name=Ashley&ordering=last_name"]),
        Shape("first_name=Ashley&last_name=Ramirez&ordering=-last_name", "api",
              ["/users?first_name=Ashley&last_name=Ramirez&ordering=-last_name"]),
        Shape("first_name=<none>&ordering=-created_at", "api",
              ["/users?first_name=Nobodyhere&ordering=-created_at"]),
        Shape("name=<3 letters, common>", "api", ["/users?name=ash", "/users?name=son"]),
        Shape("name=<3 letters>&ordering=last_name", "api",
              ["/users?name=ash&ordering=last_name", "/users?name=ell&ordering=-last_name"]),
        Shape("name=<3 letters>&ordering=created_at", "api",
              ["/users?name=ash&ordering=created_at", "/users?name=ell&ordering=-created_at"]),
        Shape("name=Ashley Ramirez&ordering=last_name", "api",
              [f"/users?name={q('Ashley Ramirez')}&ordering=last_name"]),
        Shape("name=<across first+last>&ordering=created_at", "api",
              [f"/users?name={q('ley Ram')}&ordering=created_at"]),
        Shape("name=<no match, 6 letters>&ordering=last_name", "api",
              ["/users?name=qwxyzv&ordering=last_name", "/users?name=zzqqxx"]),
        Shape("name=q, name=zq, email=qz (1-2 chars)", "api",
              ["/users?name=q", "/users?name=zq", "/users?email=qz"], accepted=(200, 400)),
        Shape("email=<3 letters>", "api", ["/users?email=gma", "/users?email=ith"]),
        Shape("email=smith1234@ (no match)", "api", [f"/users?email={q('smith1234@')}"]),
        Shape("email=<rare>&ordering=last_name", "api",
              [f"/users?email={q('ashley.ramirez7')}&ordering=last_name"]),
        Shape("email_address=<exact>", "api", [f"/users?email_address={q(values['email'])}"]),
        Shape("created_after+before (1 day)&ordering=last_name", "api",
              ["/users?created_after=2020-03-01T00:00:00Z&created_before=2020-03-02T00:00:00Z"
               "&ordering=last_name"]),
        Shape("created_after (last year)&ordering=-created_at", "api",
              ["/users?created_after=2025-01-01T00:00:00Z&ordering=-created_at"]),
        Shape("created_after (last year), default ordering (id)", "api",
              ["/users?created_after=2025-01-01T00:00:00Z"]),
        Shape("created_before (first year), default ordering (id)", "api",
              ["/users?created_before=2016-01-01T00:00:00Z"]),
        Shape("created_after (2016 on: most users), default ordering (id)", "api",
              ["/users?created_after=2016-01-01T00:00:00Z"]),
        Shape("created_after (2020 on), ordering=-id", "api",
              ["/users?created_after=2020-01-01T00:00:00Z&ordering=-id"]),
        Shape("created_before (first year)&ordering=last_name", "api",
              ["/users?created_before=2016-01-01T00:00:00Z&ordering=last_name"]),
        Shape("deleted=true", "api", ["/users?deleted=true"]),
        Shape("deleted=true&ordering=last_name", "api", ["/users?deleted=true&ordering=last_name"]),
        Shape("merged=true&ordering=-created_at", "api",
              ["/users?merged=true&ordering=-created_at"]),
        Shape("deleted=false&merged=false&ordering=-last_name", "api",
              ["/users?deleted=false&merged=false&ordering=-last_name"]),
        Shape("parent_user_id=<id>", "api", [f"/users?parent_user_id={values['parent']}"]),
        Shape("last_name=Smith&deleted=true&ordering=created_at", "api",
              ["/users?last_name=Smith&deleted=true&ordering=created_at"]),
        Shape("last_name=Smith&merged=true&ordering=-created_at", "api",
              ["/users?last_name=Smith&merged=true&ordering=-created_at"]),
        Shape("name=<3>&email=<3>&deleted=false&ordering=last_name", "api",
              ["/users?name=ash&email=gma&deleted=false&ordering=last_name"]),
        Shape("deep page, ordering=id (middle of the table)", "api",
              [f"/users?cursor={values['deep_id']}"]),
        Shape("deep page, ordering=-last_name (middle)", "api",
              [f"/users?ordering=-last_name&cursor={values['deep_last_name']}"]),
        Shape("deep page, ordering=created_at (middle)", "api",
              [f"/users?ordering=created_at&cursor={values['deep_created_at']}"]),
        Shape("deep page, last_name=Smith&ordering=created_at (middle)", "api",
              [f"/users?last_name=Smith&ordering=created_at&cursor={values['deep_smith']}"]),
    ]  # fmt: skip
    admin_list = "/admin/users/user/"
    admin = [
        Shape(ADMIN_BASELINE, "admin", [admin_list]),
        Shape("admin q=Smith", "admin", [f"{admin_list}?q=Smith"]),
        Shape("admin q=Ashley Ramirez", "admin", [f"{admin_list}?q={q('Ashley Ramirez')}"]),
        Shape("admin q=smith1234@", "admin", [f"{admin_list}?q={q('smith1234@')}"]),
        Shape("admin q=Qwxyzv", "admin", [f"{admin_list}?q=Qwxyzv"]),
        Shape("admin q=ash", "admin", [f"{admin_list}?q=ash"]),
        Shape("admin q=zq (2 chars)", "admin", [f"{admin_list}?q=zq"]),
        Shape("admin deleted=yes", "admin", [f"{admin_list}?deleted=yes"]),
        Shape("admin merged=no", "admin", [f"{admin_list}?merged=no"]),
        Shape("admin created_at__year=2022", "admin", [f"{admin_list}?created_at__year=2022"]),
        Shape("admin created 2022-03", "admin",
              [f"{admin_list}?created_at__year=2022&created_at__month=3"]),
        Shape("admin sorted by last name", "admin", [f"{admin_list}?o=3"]),
        Shape("admin sorted by -last name", "admin", [f"{admin_list}?o=-3"]),
        Shape("admin sorted by created", "admin", [f"{admin_list}?o=-5"]),
        Shape("admin sorted by first name", "admin", [f"{admin_list}?o=2"]),
        Shape("admin sorted by email", "admin", [f"{admin_list}?o=4"]),
        Shape("admin deleted=yes sorted by last name", "admin", [f"{admin_list}?deleted=yes&o=3"]),
        Shape("admin 2022 sorted by last name", "admin",
              [f"{admin_list}?created_at__year=2022&o=3"]),
        Shape("admin q=Smith sorted by created", "admin", [f"{admin_list}?q=Smith&o=-5"]),
        Shape("admin page 50", "admin", [f"{admin_list}?p=50"]),
        Shape("admin user page", "admin", [f"{admin_list}{values['user_id']}/change/"]),
    ]  # fmt: skip
    return api + admin


# --- data ------------------------------------------------------------------------------------


def shape_values(scratch: Scratch) -> dict:
    """Values the shapes need, read from the loaded table: keys in its middle for deep pages."""
    psql = scratch.psql
    total = int(psql("SELECT count(*) FROM users_user"))
    middle = total // 2
    deep_id = int(psql(f"SELECT id FROM users_user ORDER BY id OFFSET {middle} LIMIT 1"))
    name, name_id = psql(
        f"SELECT last_name, id FROM users_user ORDER BY last_name, id OFFSET {middle} LIMIT 1"
    ).split("|")
    created, created_id = psql(
        "SELECT to_json(created_at)#>>'{}', id FROM users_user ORDER BY created_at, id "
        f"OFFSET {middle} LIMIT 1"
    ).split("|")
    smiths = int(psql("SELECT count(*) FROM users_user WHERE upper(last_name) = 'SMITH'"))
    smith = psql(
        "SELECT to_json(created_at)#>>'{}', id FROM users_user WHERE upper(last_name) = 'SMITH' "
        f"ORDER BY created_at, id OFFSET {smiths // 2} LIMIT 1"
    ).split("|")
    # Stored encrypted (users.email_index): read through the model, which decrypts it.
    email = scratch.manage(
        "shell", "--no-imports", "-c",
        "from users.models import User; "
        f"print(User.objects.filter(id__gte={deep_id}).order_by('id')[0].email_address)",
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    parent = psql(
        "SELECT parent_user_id FROM users_user WHERE parent_user_id IS NOT NULL "
        f"AND id >= {deep_id} ORDER BY id LIMIT 1"
    )
    return {
        "total": total,
        "user_id": deep_id,
        "email": email,
        "parent": int(parent),
        "deep_id": cursor([deep_id]),
        "deep_last_name": cursor([name, int(name_id)]),
        "deep_created_at": cursor([created, int(created_id)]),
        "deep_smith": cursor([smith[0], int(smith[1])]),
    }


def load(scratch: Scratch, rows: int, data_dir: Path, reuse: bool) -> None:
    exists = scratch.psql(
        f"SELECT count(*) FROM pg_database WHERE datname = '{scratch.db}'", db="postgres"
    )
    if reuse and exists == "1":
        print(f"  reusing {scratch.db}; migrating it", flush=True)
        scratch.manage("migrate", "--noinput", stdout=subprocess.DEVNULL)
    else:
        if exists == "1":
            scratch.psql(f"DROP DATABASE {scratch.db} WITH (FORCE)", db="postgres")
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / f"users-{rows}.csv"
        started = time.perf_counter()
        generate_users(rows, path)
        print(f"  {path} ready in {time.perf_counter() - started:.0f} s", flush=True)
        scratch.create()
        worker = scratch.start_worker()
        try:
            started = time.perf_counter()
            scratch.manage(
                "publish_csv", str(path), "--wait", "--timeout", "7200",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            print(f"  loaded in {time.perf_counter() - started:.0f} s", flush=True)
        finally:
            worker.terminate()
            worker.wait(timeout=120)
    scratch.psql("VACUUM ANALYZE users_user")


SETUP_CODE = """
import json
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth import get_user_model
from users.services import api_client_create
_, token = api_client_create(name=%(reader)r, role="reader", expires_days=1)
admin, _ = get_user_model().objects.get_or_create(
    username=%(admin)r, defaults={"is_staff": True, "is_superuser": True})
admin.set_unusable_password()
admin.save()
session = import_module(settings.SESSION_ENGINE).SessionStore()
session[SESSION_KEY] = str(admin.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = admin.get_session_auth_hash()
session.create()
print(json.dumps({"token": token, "cookie": settings.SESSION_COOKIE_NAME,
                  "session": session.session_key}))
"""


def credentials(scratch: Scratch) -> dict:
    out = scratch.manage(
        "shell", "--no-imports", "-c", SETUP_CODE % {"reader": READER, "admin": ADMIN},
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


# --- timing ----------------------------------------------------------------------------------


def selected(shape: Shape, only: list[str]) -> bool:
    """Whether `--only` keeps `shape`: its label contains one of the substrings (the two
    baselines always run, every ratio is taken against them)."""
    if not only or shape.label in (API_BASELINE, ADMIN_BASELINE):
        return True
    return any(part in shape.label for part in only)


def time_shapes(
    base: str, shapes: list[Shape], creds: dict, samples: int, budget: float
) -> dict[str, Result]:
    import httpx

    api_headers = {"Accept": "application/json", "Authorization": f"Token {creds['token']}"}
    admin_headers = {"Cookie": f"{creds['cookie']}={creds['session']}"}
    results: dict[str, Result] = {}
    with httpx.Client(base_url=base, timeout=300) as client:
        for shape in shapes:
            headers = api_headers if shape.kind == "api" else admin_headers
            result = results[shape.label] = Result()
            for path in shape.paths:  # warm-up, untimed
                client.get(path, headers=headers)
            started = time.monotonic()
            for n in range(samples):
                if n >= 3 and time.monotonic() - started > budget:
                    break
                path = shape.paths[n % len(shape.paths)]
                began = time.perf_counter()
                response = client.get(path, headers=headers)
                result.times.append((time.perf_counter() - began) * 1000)
                result.statuses[response.status_code] = (
                    result.statuses.get(response.status_code, 0) + 1
                )
            print(
                f"    {shape.label:<58} p50 {result.p50:8.1f}  p95 {result.p95:8.1f} ms  "
                f"{statuses(result)}",
                flush=True,
            )
    return results


def statuses(result: Result) -> str:
    return " ".join(f"{code}x{count}" for code, count in sorted(result.statuses.items()))


EXPLAIN_CODE = """
import sys
import django
django.setup()
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.contrib.auth import get_user_model
path, kind, token = sys.argv[1:4]
client = Client(HTTP_HOST="127.0.0.1")
headers = {"HTTP_ACCEPT": "application/json"}
if kind == "api":
    headers["HTTP_AUTHORIZATION"] = "Token " + token
else:
    client.force_login(get_user_model().objects.get(username=%(admin)r))
with CaptureQueriesContext(connection) as captured:
    client.get(path, **headers)
worst = max(captured.captured_queries, key=lambda query: float(query["time"]))
print("slowest query (%%s s): %%s" %% (worst["time"], worst["sql"]))
with connection.cursor() as cursor:
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + worst["sql"])
    print("\\n".join(row[0] for row in cursor.fetchall()))
"""


def explain(scratch: Scratch, shape: Shape, token: str) -> str:
    env = {**scratch.env, "DJANGO_SETTINGS_MODULE": "viswals.settings", "PYTHONPATH": str(ROOT)}
    # Debug on: the test client's query log; no statement timeout for the EXPLAIN ANALYZE.
    env.update(DJANGO_DEBUG="true", API_QUERY_TIMEOUT_MS="0")
    return subprocess.run(
        [PY, "-c", EXPLAIN_CODE % {"admin": ADMIN}, shape.paths[0], shape.kind, token],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def email_keys(data_dir: Path, tag: str) -> dict[str, str]:
    """The email keys of a scratch database, kept beside the data (mode 600) so that a kept
    database can be reused (--reuse): its addresses are encrypted under them."""
    path = data_dir / f"viswals_{tag}.email-keys.json"
    if not path.exists():
        keys = {
            "EMAIL_ENCRYPTION_KEYS": f"bench:{secrets.token_urlsafe(32)}",
            "EMAIL_BLIND_INDEX_KEY": secrets.token_urlsafe(32),
        }
        path.touch(mode=0o600)
        path.write_text(json.dumps(keys))
    return json.loads(path.read_text())


def run_size(rows: int, args) -> tuple[dict[str, Result], list[Shape], Scratch, dict]:
    tag = f"search{rows}"
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = Scratch(tag, **SERVER_ENV, **email_keys(data_dir, tag))
    print(f"\n== {rows:,} rows ({scratch.db})", flush=True)
    load(scratch, rows, Path(args.data_dir), args.reuse)
    values = shape_values(scratch)
    print(f"  users stored: {values['total']:,}", flush=True)
    creds = credentials(scratch)
    # Debug off: the admin's pages need the static files' manifest (what `make run` does too).
    scratch.manage("collectstatic", "--noinput", "--verbosity", "0")
    shapes = [shape for shape in query_shapes(values) if selected(shape, args.only)]
    port = free_port()
    server = start_web_server(port, scratch.env)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the web server did not start") from None
                time.sleep(0.3)
        results = time_shapes(f"http://127.0.0.1:{port}", shapes, creds, args.samples, args.budget)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results, shapes, scratch, creds


def report(sizes: list[int], runs: dict[int, dict[str, Result]], shapes: list[Shape]) -> Shape:
    """Print the table; return the worst shape at the largest size (by ratio)."""
    first, last = sizes[0], sizes[-1]
    head = "".join(f" | {size:>9,} p50 / p95 ms" for size in sizes)
    print(f"\n{'shape':<58}{head} | ratio@{last:,} | growth p50 | status@{last:,}")
    worst, worst_ratio = shapes[0], 0.0
    for shape in shapes:
        base = API_BASELINE if shape.kind == "api" else ADMIN_BASELINE
        limit = 10 if shape.kind == "api" else 5
        cells = ""
        for size in sizes:
            result = runs[size][shape.label]
            cells += f" | {result.p50:9.1f} / {result.p95:9.1f}   "
        last_result = runs[last][shape.label]
        ratio = last_result.p95 / runs[last][base].p95
        growth = last_result.p50 / runs[first][shape.label].p50
        flags = ("" if ratio <= limit else " >limit") + ("" if growth <= 2 else " >2x")
        print(
            f"{shape.label:<58}{cells} | {ratio:8.1f}x | {growth:8.2f}x{flags:<14} | "
            f"{statuses(last_result)}"
        )
        if shape.label not in (API_BASELINE, ADMIN_BASELINE) and ratio / limit > worst_ratio:
            worst, worst_ratio = shape, ratio / limit
    print(
        f"\ntargets: API p95 <= 10x '{API_BASELINE}', admin p95 <= 5x '{ADMIN_BASELINE}', "
        "p50 growth <= 2x"
    )
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500000,5000000", help="comma-separated row counts")
    parser.add_argument("--samples", type=int, default=15, help="timed requests per shape")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per shape, about")
    parser.add_argument("--data-dir", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--reuse", action="store_true", help="reuse kept scratch databases")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="time only the shapes whose label contains SUBSTRING (repeatable; the baselines "
        "always run)",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    runs: dict[int, dict[str, Result]] = {}
    scratches: list[Scratch] = []
    try:
        for rows in sizes:
            results, shapes, scratch, creds = run_size(rows, args)
            scratches.append(scratch)
            runs[rows] = results
        worst = report(sizes, runs, shapes)
        print(f"\nEXPLAIN of the worst shape at {sizes[-1]:,}: {worst.label} ({worst.paths[0]})")
        print(explain(scratches[-1], worst, creds["token"]))
    finally:
        for scratch in scratches:
            if args.keep:
                scratch.flush_redis()
            else:
                scratch.cleanup()
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
