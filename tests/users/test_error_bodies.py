"""The JSON error body is shaped in one module (users/error_bodies.py) for every path: the apps'
refusals, the API's handlers, the wiring's request limits and uvicorn protocol."""

from __future__ import annotations

import ast
from pathlib import Path

from rest_framework.settings import api_settings

from users.error_bodies import NON_FIELD_ERRORS, error_data
from users.refusals import error_body

ROOT = Path(__file__).resolve().parent.parent.parent
# The stream-closed event's data ({"reason": ..., "detail": ...}) is an SSE event, not a body.
NOT_A_BODY = {"users/stream/encoding.py"}


def test_an_error_is_a_detail_and_a_400_a_map_of_lists():
    assert error_data("Not found.") == {"detail": "Not found."}
    assert error_data("Gone.", status=410, retry=3) == {"detail": "Gone.", "retry": 3}
    assert error_data("Bad request.", status=400) == {"non_field_errors": ["Bad request."]}
    assert NON_FIELD_ERRORS == api_settings.NON_FIELD_ERRORS_KEY


def test_the_body_is_the_compact_json_drf_writes():
    assert error_body("Not found.") == b'{"detail":"Not found."}'


def _writes_a_detail(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict) and any(
            isinstance(key, ast.Constant) and key.value == "detail" for key in node.keys
        ):
            return True
    return False


def test_no_other_module_shapes_an_error_body():
    writers = {
        str(path.relative_to(ROOT))
        for package in ("viswals", "users", "ingest")
        for path in (ROOT / package).rglob("*.py")
        if _writes_a_detail(path)
    }
    assert writers - NOT_A_BODY == {"users/error_bodies.py"}
