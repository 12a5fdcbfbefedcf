"""The reference docs (docs/, mkdocs.yml) build without a broken link or anchor, and the
configuration page and .env.example name exactly the environment variables the code reads."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.environment import ROOT

CONFIGURATION = ROOT / "docs" / "configuration.md"
# The configuration page's sections: "## Settings" lists what viswals/settings.py reads,
# "## Process settings" what the process commands read (scripts, Procfile, image, Compose).
SETTINGS_SECTION = "## Settings"
PROCESS_SECTION = "## Process settings"
PROCESS_FILES = ("scripts/*.sh", "Procfile", "Dockerfile", "docker-compose.yml", "**/*.py")


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
    )


def settings_env_reads() -> set[str]:
    """Names viswals/settings.py reads from the environment: `env.<cast>("NAME", ...)` or
    `env("NAME")` (django-environ), `os.environ.get("NAME")`, `os.environ["NAME"]`,
    `os.getenv("NAME")`."""
    tree = ast.parse((ROOT / "viswals" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and _is_env_read(node.func):
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                names.add(node.slice.value)
    return names


def _is_env_read(func: ast.expr) -> bool:
    text = ast.unparse(func)
    return (
        text == "env"
        or (isinstance(func, ast.Attribute) and ast.unparse(func.value) == "env")
        or text in ("os.environ.get", "os.getenv", "os.environ.setdefault")
    )


def page_variables(section: str) -> list[str]:
    """Variables named in the first column of the tables under SECTION (a `## ` heading), up to
    the next `## ` heading."""
    text = CONFIGURATION.read_text()
    start = text.index(f"\n{section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None]
    return re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", body, re.M)


def test_docs_build_in_strict_mode(tmp_path):
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def test_a_broken_anchor_fails_the_build(tmp_path):
    # The same docs with one link to a heading that does not exist: mkdocs.yml's validation
    # settings must make strict mode refuse it (by default anchors are not checked).
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")  # architecture.md: the file it links to
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + "\n[gone](api.md#no-such-heading)\n")

    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")

    assert result.returncode != 0
    assert "no-such-heading" in result.stdout + result.stderr


def test_configuration_page_lists_exactly_the_variables_settings_read():
    read = settings_env_reads()
    listed = page_variables(SETTINGS_SECTION)
    assert len(read) > 40, "settings.py reads fewer variables than expected: is the parser right?"

    missing, extra = sorted(read - set(listed)), sorted(set(listed) - read)
    assert not missing, (
        f"viswals/settings.py reads {missing}, which docs/configuration.md does not list: add a "
        f"row `| `NAME` | default | what it does |` to a table under {SETTINGS_SECTION!r}"
    )
    assert not extra, (
        f"docs/configuration.md lists {extra} under {SETTINGS_SECTION!r}, which "
        "viswals/settings.py does not read: remove the rows (or move them to "
        f"{PROCESS_SECTION!r} if a process command reads them)"
    )
    duplicated = sorted({name for name in listed if listed.count(name) > 1})
    assert not duplicated, f"docs/configuration.md lists {duplicated} more than once"


def test_process_settings_on_the_page_are_read_by_the_process_commands():
    listed = page_variables(PROCESS_SECTION)
    assert listed
    sources = "\n".join(
        path.read_text(errors="replace")
        for pattern in PROCESS_FILES
        for path in ROOT.glob(pattern)
        if ".venv" not in path.parts and "tests" not in path.parts
    )
    unread = [name for name in listed if not re.search(rf"\b{name}\b", sources)]
    assert not unread, (
        f"docs/configuration.md lists {unread} under {PROCESS_SECTION!r}, but no script, "
        "Procfile, Dockerfile, compose file or module reads them: remove the rows"
    )
    both = sorted(set(listed) & set(page_variables(SETTINGS_SECTION)))
    assert not both, f"{both}: list each variable once, under the section of who reads it"


def test_env_example_documents_every_variable_settings_read():
    documented = set(
        re.findall(r"^(?:# )?([A-Z_][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    missing = sorted(settings_env_reads() - documented)
    assert not missing, (
        f"viswals/settings.py reads {missing}, which .env.example does not document: add "
        "`NAME=default` with a one-line comment above it"
    )
