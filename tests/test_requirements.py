"""The requirements split: requirements.txt is the runtime (what the Docker image installs), and
requirements-dev.txt adds the tools for tests, docs and local runs. Every import of product code
must resolve to a runtime pin, every pin's own dependencies must be pinned beside it, and no
dev-only tool may reach the image."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from django.conf import settings
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.environment import ROOT

PRODUCT = [ROOT / "users", ROOT / "ingest", ROOT / "viswals", ROOT / "manage.py"]
FIRST_PARTY = {"users", "ingest", "viswals", "tests", "bench"}
# Tools that only tests, docs and local runs use: never in the image.
DEV_ONLY = {
    "pytest", "pytest-django", "pytest-timeout", "ruff", "schemathesis", "hypothesis",
    "factory-boy", "faker", "mkdocs", "honcho", "httpx", "psutil", "gunicorn",
}  # fmt: skip


def pins(name: str) -> dict[str, str]:
    """The `name==version` lines of a requirements file (those of its -r files too)."""
    found: dict[str, str] = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            found |= pins(line[3:].strip())
        elif line:
            requirement = Requirement(line)
            assert str(requirement.specifier).startswith("=="), f"{name}: not pinned: {line}"
            found[canonicalize_name(requirement.name)] = str(requirement.specifier)[2:]
    return found


def top_level_imports(paths: list[Path]) -> dict[str, Path]:
    """Each imported top-level module outside the standard library and the project, with one
    file that imports it."""
    found: dict[str, Path] = {}
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*.py"))]
    for path in files:
        # Scripts import their neighbours, and tests of benchmarks the benchmarks' modules.
        local = {p.stem for p in [*path.parent.glob("*.py"), *(ROOT / "bench").glob("*.py")]}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY | local:
                    found.setdefault(top, path)
    return found


def distributions_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in packages_distributions().get(module, [])}


def unpinned_imports(paths: list[Path], pinned: dict[str, str]) -> list[str]:
    return [
        f"{module} (imported by {path.relative_to(ROOT)})"
        for module, path in sorted(top_level_imports(paths).items())
        if not distributions_of(module) & set(pinned)
    ]


def test_every_import_of_product_code_is_a_runtime_requirement():
    assert unpinned_imports(PRODUCT, pins("requirements.txt")) == []


def test_every_installed_app_is_a_runtime_requirement():
    runtime = set(pins("requirements.txt"))
    missing = [
        app
        for app in settings.INSTALLED_APPS
        if (module := app.partition(".")[0]) not in FIRST_PARTY
        and not distributions_of(module) & runtime
    ]
    assert missing == []


def test_every_import_of_tests_and_benchmarks_is_a_dev_requirement():
    assert unpinned_imports([ROOT / "tests", ROOT / "bench"], pins("requirements-dev.txt")) == []


def test_no_dev_only_tool_is_a_runtime_requirement():
    assert DEV_ONLY & set(pins("requirements.txt")) == set()
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_each_pin_s_dependencies_are_pinned_beside_it(name):
    """The files are closed: installing one pulls in nothing unpinned (checked against the
    installed packages' metadata, which `make install` made from these pins)."""
    pinned = pins(name)
    unpinned = []
    for package in pinned:
        try:
            requires = distribution(package).requires or []
        except PackageNotFoundError:
            continue  # not installed here: the next test says so
        for raw in requires:
            requirement = Requirement(raw)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra not asked for, or another platform's
            if canonicalize_name(requirement.name) not in pinned:
                unpinned.append(f"{requirement.name} (for {package})")
    assert unpinned == []


@pytest.mark.parametrize(
    ("source", "pinned"),
    [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")],
)
def test_the_in_files_agree_with_the_pins(source, pinned):
    """Each name of an .in file is pinned at the same version in its .txt (and installed)."""
    exact = pins(pinned)
    for line in (ROOT / source).read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-r "):
            continue
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert exact.get(name) == str(requirement.specifier)[2:], line
        for extra in requirement.extras:  # its extras' packages are pinned too
            for raw in distribution(name).requires or []:
                needed = Requirement(raw)
                if needed.marker is not None and needed.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(needed.name) in exact, f"{line}: {needed.name}"
    installed = {name: distribution(name).version for name in exact}
    assert {n: v for n, v in exact.items() if re.sub(r"\+.*", "", installed[n]) != v} == {}
