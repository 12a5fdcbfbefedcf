"""Tests for data/generate_users.py, the dirty users CSV generator."""

from __future__ import annotations

import csv
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.data import HEADER as HEADER_TEXT

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "data" / "generate_users.py"
SAMPLE = REPO_ROOT / "data" / "users.csv"
HEADER = HEADER_TEXT.encode()
EPOCH_MS = re.compile(r"\d{13}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_users", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_generator()


def generate(gen: ModuleType, rows: int, seed: int = 1, **options: object) -> bytes:
    out = io.BytesIO()
    gen.UsersCsvGenerator(rows=rows, seed=seed, **options).write(out)
    return out.getvalue()


def data_lines(content: bytes) -> list[bytes]:
    """Data lines: header and blank lines dropped."""
    lines = content.split(b"\n")
    assert lines[0] == HEADER
    assert lines[-1] == b"", "file must end with a newline"
    return [line for line in lines[1:-1] if line.strip()]


def is_good(line: bytes) -> bool:
    """An independent validator mirroring the documented rules for a good row."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    rows = list(csv.reader([text]))
    if len(rows) != 1 or len(rows[0]) != 8:
        return False
    fields = [field.strip() for field in rows[0]]
    user_id, first, last, email, created, deleted, merged, parent = fields
    if not user_id.isdigit() or int(user_id) <= 0:
        return False
    if not EPOCH_MS.fullmatch(created) or not EMAIL.fullmatch(email):
        return False
    if not first or len(first) > 255 or not last or len(last) > 255:
        return False
    for value in (deleted, merged):
        if value in ("", "-1"):
            continue
        if not EPOCH_MS.fullmatch(value) or int(value) <= int(created):
            return False
    return parent in ("", "-1") or parent.isdigit()


def test_header_and_row_count(gen: ModuleType) -> None:
    for rows in (0, 1, 99, 100, 2_500):
        content = generate(gen, rows)
        assert content.split(b"\n", 1)[0] == HEADER
        assert len(data_lines(content)) == rows


def test_deterministic_per_seed(gen: ModuleType) -> None:
    assert generate(gen, 3_000, seed=5) == generate(gen, 3_000, seed=5)
    assert generate(gen, 3_000, seed=5) != generate(gen, 3_000, seed=6)


def test_bad_fraction_roughly_respected(gen: ModuleType) -> None:
    rows = 50_000
    for fraction in (0.003, 0.02):
        options = {"bad_fraction": fraction, "ensure_each_kind": False}
        content = generate(gen, rows, seed=11, **options)
        bad = sum(not is_good(line) for line in data_lines(content))
        assert 0.6 * fraction * rows <= bad <= 1.4 * fraction * rows, (fraction, bad)
    clean = generate(gen, 5_000, bad_fraction=0.0, ensure_each_kind=False)
    assert all(is_good(line) for line in data_lines(clean))


def test_most_rows_parse_with_epoch_millis(gen: ModuleType) -> None:
    lines = data_lines(generate(gen, 20_000, seed=3))
    good = [line for line in lines if is_good(line)]
    assert len(good) >= 0.99 * len(lines)
    for row in csv.reader(line.decode("utf-8") for line in good):
        created = int(row[4])
        assert 1_420_070_400_000 <= created < 1_767_225_600_000  # 2015 to 2025


def test_dirty_features_present(gen: ModuleType) -> None:
    content = generate(gen, 20_000, seed=9)
    lines = data_lines(content)
    assert b"\n\n" in content, "expected at least one blank line"
    assert any(line.startswith(b" ") and is_good(line) for line in lines), "padded rows"
    good_rows = [next(csv.reader([line.decode()])) for line in lines if is_good(line)]
    ids = [row[0].strip() for row in good_rows]
    assert len(ids) - len(set(ids)) >= 0.002 * len(ids), "duplicate ids"
    emails = [row[3].strip() for row in good_rows]
    assert len(emails) - len(set(emails)) >= 0.01 * len(emails), "repeated emails"
    merged = [row for row in good_rows if row[6].strip() not in ("", "-1")]
    assert 0.02 * len(good_rows) <= len(merged) <= 0.04 * len(good_rows)
    assert all(row[7].strip().isdigit() for row in merged)
    assert any(',"' in line.decode() for line in lines), "RFC 4180 quoted names"


def test_each_kind_forced_in_small_files(gen: ModuleType) -> None:
    generator = gen.UsersCsvGenerator(rows=200, seed=4, bad_fraction=0.0)
    generator.write(io.BytesIO())
    for kind in (*gen.BAD_KINDS, *gen.FORCED_EXTRAS):
        assert generator.stats[kind] >= 1, kind


def test_cli_writes_file_and_stdout(tmp_path: Path) -> None:
    output = tmp_path / "users.csv"
    args = [sys.executable, str(SCRIPT), "--rows", "300", "--seed", "2"]
    subprocess.run([*args, "--output", str(output)], check=True)
    stdout = subprocess.run(args, check=True, capture_output=True).stdout
    assert output.read_bytes() == stdout
    assert len(data_lines(stdout)) == 300


def test_committed_sample_matches_generator(gen: ModuleType) -> None:
    content = SAMPLE.read_bytes()
    assert content == generate(gen, 1_000, seed=42)
    lines = data_lines(content)
    assert len(lines) == 1_000
    assert sum(not is_good(line) for line in lines) >= len(gen.BAD_KINDS)
