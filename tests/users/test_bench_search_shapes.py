"""bench/bench_search.py's query shapes, on a small table: every API shape answers as the bench
expects (200, or 400 for a substring without a trigram) and every admin page 200, so the
benchmark measures answers rather than errors. (The benchmark itself, at 500k and 5M users,
is `make bench-search`, never part of the suite.)"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_search  # noqa: E402

pytestmark = pytest.mark.django_db


def test_every_shape_answers(reader_client, admin_client, user_factory):
    from users.models import User

    start = datetime(2015, 1, 1, tzinfo=UTC)
    names = [("Ashley", "Ramirez"), ("Ashley", "Smith"), ("Mary", "Robinson"), ("John", "Li")]
    for n in range(40):
        first, last = names[n % len(names)]
        user_factory(
            first_name=first,
            last_name=last,
            created_at=start + timedelta(days=100 * n),
            deleted_at=start if n % 5 == 0 else None,
            parent_user_id=7 if n % 3 else None,
        )
    users = list(User.objects.order_by("id"))
    middle = users[len(users) // 2]
    smith = User.objects.filter(last_name="Smith").order_by("created_at", "id")[3]
    values = {
        "user_id": middle.id,
        "email": middle.email_address,
        "parent": 7,
        "deep_id": bench_search.cursor([middle.id]),
        "deep_last_name": bench_search.cursor([middle.last_name, middle.id]),
        "deep_created_at": bench_search.cursor([middle.created_at.isoformat(), middle.id]),
        "deep_smith": bench_search.cursor([smith.created_at.isoformat(), smith.id]),
    }
    shapes = bench_search.query_shapes(values)
    assert {shape.kind for shape in shapes} == {"api", "admin"}
    for shape in shapes:
        client = reader_client if shape.kind == "api" else admin_client
        for path in shape.paths:
            response = client.get(path, HTTP_ACCEPT="application/json")
            assert response.status_code in shape.accepted, (shape.label, path, response.content)
            if shape.kind == "api" and response.status_code == 200:
                assert "results" in response.json()


def test_only_keeps_the_matching_shapes_and_both_baselines():
    values = {
        "user_id": 1,
        "email": "a@example.org",
        "parent": 7,
        **{key: bench_search.cursor([1]) for key in ("deep_id", "deep_last_name")},
        **{
            key: bench_search.cursor(["2020-01-01T00:00:00+00:00", 1])
            for key in ("deep_created_at", "deep_smith")
        },
    }
    shapes = bench_search.query_shapes(values)
    kept = [s.label for s in shapes if bench_search.selected(s, ["email_address=", "admin q=ash"])]
    assert kept == [
        bench_search.API_BASELINE,
        "email_address=<exact>",
        bench_search.ADMIN_BASELINE,
        "admin q=ash",
    ]
    assert all(bench_search.selected(shape, []) for shape in shapes)
