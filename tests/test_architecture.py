"""ARCHITECTURE.md's "may import" column, kept true: every module of viswals/, users/ and ingest/
is placed on the map below, and each of its imports of the project (at the top or inside a
function) is either within its own row or named in that row's "may import". A new module, or a
new import across rows, fails here until the map (and ARCHITECTURE.md, which says the same in
words) is changed on purpose."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("viswals", "users", "ingest")

# ARCHITECTURE.md's modules table, as data: row -> (the modules it covers, what they may import
# besides each other). A name covers its submodules ("users.stream" covers users.stream.views);
# a module belongs to the row with the longest name that covers it.
MAP: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "wiring": (
        ("viswals",),
        # Of the apps only their entry points: the ASGI wrappers, the scope extensions the
        # uvicorn protocol offers, URL modules and the views urls.py routes. Collectors,
        # readiness checks, the landing page's latest run and the import-session check are
        # named in settings, not imported.
        (
            "users.api.asgi",
            "users.stream.stalled",
            "users.stream.extensions",
            "users.api.urls",
            "users.stream.urls",
            "users.pages",
            "users.api.exceptions",
            # the JSON error body's shape and the words of the request limits' refusals
            "users.error_bodies",
            # the project's Redis clients: /readyz pings Redis through them
            "users.redis",
        ),
    ),
    "columns": (("users.columns",), ()),
    "validation": (("users.validation",), ("users.columns",)),
    "crypto": (("users.crypto",), ("users.validation",)),
    "email index": (("users.email_index",), ("users.crypto",)),
    "fields": (("users.fields",), ("users.crypto", "users.email_index", "users.validation")),
    "email rotation": (("users.email_rotation",), ("users.crypto", "users.email_index")),
    "payloads": (("users.payloads",), ("users.columns",)),
    "models": (("users.models", "ingest.models"), ("users.fields",)),
    "access": (("users.access",), ()),
    "client address": (("users.client_address",), ()),
    "error bodies": (("users.error_bodies",), ()),
    "refusals": (("users.refusals",), ("users.access", "users.payloads", "users.error_bodies")),
    "redis": (("users.redis",), ()),
    "cache": (("users.cache",), ("users.payloads", "users.redis")),
    "rate limits": (("users.ratelimit",), ("users.redis", "users.cache")),
    "consistency": (("users.consistency",), ("users.cache", "viswals.db_router")),
    "selectors": (
        ("users.selectors",),
        (
            "users.models",
            "users.cache",
            "users.access",
            "users.payloads",
            "users.refusals",
            "users.email_index",
            "users.validation",
        ),
    ),
    "filters": (("users.filters",), ("users.models", "users.selectors", "users.validation")),
    "events": (
        ("users.events",),
        ("users.payloads", "users.stream.history", "users.cache", "users.redis"),
    ),
    "services": (
        ("users.services",),
        (
            "users.models",
            "users.cache",
            "users.events",
            "users.access",
            "users.payloads",
            "users.columns",
            "users.email_index",
        ),
    ),
    "stream": (
        ("users.stream",),
        (
            "users.selectors",
            "users.access",
            "users.refusals",
            "users.cache",
            "users.redis",
            "users.ratelimit",
            "users.consistency",
            "users.client_address",
            "viswals.db_router",
        ),
    ),
    "api": (
        ("users.api",),
        (
            "users.selectors",
            "users.services",
            "users.access",
            "users.refusals",
            "users.filters",
            "users.cache",
            "users.ratelimit",
            "users.payloads",
            "users.validation",
            "users.columns",
            "users.models",
            "users.consistency",
            "users.client_address",
            "viswals.db_router",
        ),
    ),
    "users adapters": (
        (
            "users.admin",
            "users.templatetags",
            "users.pages",
            "users.signals",
            "users.apps",
            "users.management",
        ),
        (
            "users.services",
            "users.selectors",
            "users.models",
            "users.access",
            "users.columns",
            "users.payloads",
            "users.error_bodies",
            "users.consistency",
            "users.crypto",
            "users.email_rotation",
            "viswals.db_router",
        ),
    ),
    "metrics": (("users.metrics", "ingest.metrics"), ("users.selectors", "ingest.selectors")),
    "parsing": (("ingest.parsing",), ("users.columns",)),
    "producer": (
        (
            "ingest.publishing",
            "ingest.progress",
            "ingest.interrupts",
            "ingest.reports",
            "ingest.uploads",
        ),
        (
            "ingest.parsing",
            "ingest.services",
            "ingest.selectors",
            "ingest.models",
            "ingest.tasks",
            "users.services",
            "users.access",
        ),
    ),
    "ingest services": (
        ("ingest.services",),
        (
            "users.services",
            "users.crypto",
            "users.validation",
            "ingest.parsing",
            "ingest.bulk",
            "ingest.indexes",
            "ingest.models",
            "ingest.selectors",
        ),
    ),
    "bulk runs": (("ingest.bulk",), ("ingest.indexes", "ingest.models")),
    "indexes": (("ingest.indexes", "ingest.checks"), ("ingest.bulk",)),
    "tasks": (("ingest.tasks",), ("ingest.services", "ingest.bulk")),
    "ingest selectors": (("ingest.selectors",), ("ingest.models",)),
    "ingest adapters": (
        ("ingest.admin", "ingest.apps", "ingest.management"),
        (
            "ingest.models",
            "ingest.parsing",
            "ingest.publishing",
            "ingest.progress",
            "ingest.interrupts",
            "ingest.reports",
            "ingest.uploads",
            "ingest.selectors",
            "ingest.services",
            "ingest.checks",
            "ingest.indexes",
            "users.access",
            # failed batches re-encrypted by a key rotation (token_holders)
            "users.email_rotation",
            # GC tuned for batches, as the worker's (viswals.celery) is
            "viswals.runtime",
        ),
    ),
}
# The apps' package modules themselves (users/__init__.py, ingest/__init__.py) import nothing;
# a new module of an app must find its row above.
APP_PACKAGES = ("users", "ingest")


def covers(name: str, module: str) -> bool:
    return module == name or module.startswith(name + ".")


def row_of(module: str) -> str | None:
    """The map's row a module belongs to: the longest name that covers it."""
    if module in APP_PACKAGES:
        return "app packages"
    best = None
    for row, (modules, _) in MAP.items():
        for name in modules:
            if covers(name, module) and (best is None or len(name) > len(best[1])):
                best = (row, name)
    return best[0] if best else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for top in PROJECT
        for path in sorted((ROOT / top).rglob("*.py"))
        if "migrations" not in path.parts
    }


def imports_of(module: str, source: str, *, is_package: bool = False) -> set[str]:
    """The project modules `source` imports, anywhere in it: `from a.b import c` names a.b.c
    when that is a module of the project, else a.b; relative imports are resolved."""
    known = set(project_modules())
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name.split(".")[0] in PROJECT}


def violations(module: str, imported: set[str]) -> list[str]:
    """The imports of `module` that its row of the map does not allow."""
    row = row_of(module)
    if row is None:
        return [f"{module} is on no row of the map"]
    allowed = MAP[row][1] if row in MAP else ()
    return sorted(
        f"{module} ({row}) imports {name}"
        for name in imported
        if row_of(name) != row and not any(covers(rule, name) for rule in allowed)
    )


def test_every_import_of_the_project_follows_the_map():
    broken = []
    for module, path in project_modules().items():
        imported = imports_of(module, path.read_text(), is_package=path.name == "__init__.py")
        broken += violations(module, imported)
    assert not broken, "imports the map (ARCHITECTURE.md) does not allow:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        # the apps never import the wiring's modules beyond the database router
        ("users.selectors", "from viswals.health import readyz", ["viswals.health"]),
        # users never imports ingest, also inside a function
        ("users.admin", "def f():\n    from ingest.admin import can_import", ["ingest.admin"]),
        # the wiring imports no app's services, selectors or models
        ("viswals.urls", "from users import services", ["users.services"]),
        ("viswals.health", "import ingest.models", ["ingest.models"]),
        # the pure modules import nothing of the project
        ("users.columns", "from users.models import User", ["users.models"]),
        # relative imports are resolved
        ("users.stream.views", "from ..api import throttling", ["users.api.throttling"]),
        # within a row, and what the row names, is fine
        ("users.stream.views", "from users.stream import history", []),
        ("users.api.views", "from users.selectors import user_get", []),
    ],
)
def test_the_checker_finds_a_new_import_across_the_map(module, source, broken):
    found = violations(module, imports_of(module, source))
    assert [line.rpartition(" imports ")[2] for line in found] == broken


def test_a_new_module_on_no_row_of_the_map_fails():
    assert violations("users.newcomer", set()) == ["users.newcomer is on no row of the map"]


def test_every_row_of_the_map_names_modules_that_exist():
    existing = set(project_modules())
    for row, (modules, allowed) in MAP.items():
        for name in (*modules, *allowed):
            assert any(covers(name, module) for module in existing), f"{row}: no module {name}"


def test_architecture_md_names_every_row_of_the_map():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for row, (modules, _) in MAP.items():
        for name in modules:
            path = name.replace(".", "/")
            assert re.search(rf"`{re.escape(path)}(\.py|/)", text), f"{row}: {path} not in the map"
