"""Compose's first start, outside a container: `setup` (scripts/first-start.sh) makes the missing
secrets into a fresh volume once and reuses them, keeps given ones, and prints an admin account
and a writer token once; the image's entrypoint (scripts/entrypoint.sh) exports them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.environment import ROOT, random_email_keys, random_secret_key, subprocess_env
from users.access import token_digest
from users.models import ApiToken
from viswals.email_keys import email_keys_load
from viswals.secret_key import secret_key_problem

SECRETS = ("DJANGO_SECRET_KEY", "METRICS_TOKEN")


def shell_env(volume: Path, **extra: str) -> dict[str, str]:
    """A container's environment as Compose gives it: the volume's path, the venv's python, and
    no secret unless EXTRA gives one."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    path = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return {**env, "PATH": path, "VISWALS_STATE_DIR": str(volume), **extra}


def secrets_step(volume: Path, **given: str) -> str:
    result = subprocess.run(
        ["sh", "scripts/first-start.sh"],
        cwd=ROOT,
        env=shell_env(volume, SECRETS_ONLY="1", **given),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def stored(volume: Path) -> dict[str, str]:
    lines = (volume / "secrets.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def environment_seen(volume: Path, names: tuple[str, ...], **given: str) -> dict[str, str]:
    """The variables `names` as a service's command sees them once the entrypoint ran."""
    code = f"import os; print(*(os.environ.get(name, '') for name in {names!r}), sep='\\n')"
    result = subprocess.run(
        ["sh", "scripts/entrypoint.sh", sys.executable, "-c", code],
        cwd=ROOT,
        env=shell_env(volume, **given),
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(zip(names, result.stdout.splitlines(), strict=True))


def exported(volume: Path, **given: str) -> dict[str, str]:
    """The secrets a service's command sees once the entrypoint ran."""
    return environment_seen(volume, ("DJANGO_SECRET_KEY", "METRICS_TOKEN"), **given)


def test_first_start_makes_the_missing_secrets_once_into_the_volume(tmp_path):
    volume = tmp_path / "state"  # a fresh named volume: nothing there yet

    first = secrets_step(volume)
    made = stored(volume)
    second = secrets_step(volume)

    assert set(made) == set(SECRETS)
    assert secret_key_problem(made["DJANGO_SECRET_KEY"]) is None  # production rules accept it
    assert len(made["METRICS_TOKEN"]) >= 40
    assert first.count(": made") == 2
    assert stored(volume) == made  # reused, not made again
    assert second.count("reusing the one made on the first start") == 2
    assert (volume / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert exported(volume) == made


def test_given_secrets_win_and_are_never_written_to_the_volume(tmp_path):
    volume = tmp_path / "state"
    key = random_secret_key()

    output = secrets_step(volume, DJANGO_SECRET_KEY=key)

    assert "DJANGO_SECRET_KEY: given in the environment" in output
    assert set(stored(volume)) == {"METRICS_TOKEN"}
    assert key not in (volume / "secrets.env").read_text()
    assert exported(volume, DJANGO_SECRET_KEY=key)["DJANGO_SECRET_KEY"] == key
    # Given later (Compose's .env), over one made earlier: the given one is used.
    secrets_step(tmp_path / "other")
    other_key = random_secret_key()
    assert exported(tmp_path / "other", DJANGO_SECRET_KEY=other_key) == {
        "DJANGO_SECRET_KEY": other_key,
        "METRICS_TOKEN": stored(tmp_path / "other")["METRICS_TOKEN"],
    }


def test_entrypoint_runs_the_command_without_a_volume(tmp_path):
    result = subprocess.run(
        ["sh", "scripts/entrypoint.sh", "echo", "ran"],
        cwd=ROOT,
        env=shell_env(tmp_path / "none"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout == "ran\n"


def run_setup(volume: Path) -> str:
    # Production settings (debug off) and no secret given: only the one made here can start it.
    container = shell_env(volume)
    env = subprocess_env(
        DJANGO_DEBUG="false", VISWALS_STATE_DIR=str(volume), PATH=container["PATH"]
    )
    for name in SECRETS:
        env.pop(name, None)
    result = subprocess.run(
        ["sh", "scripts/first-start.sh", "8081"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.django_db(transaction=True)
def test_first_start_prints_an_admin_and_a_writer_token_once(tmp_path):
    volume = tmp_path / "state"

    first = run_setup(volume)
    second = run_setup(volume)

    assert "password '" in first and "http://localhost:8081/admin/" in first
    token = next(word for word in first.split() if word.startswith("vw_"))
    assert ApiToken.objects.get(digest=token_digest(token)).account.username == "local-writer"
    assert (volume / "credentials").read_text() in first
    assert (volume / "credentials").stat().st_mode & 0o777 == 0o600
    # Later starts change nothing and print no secret; the first token still works.
    assert "vw_" not in second and "password '" not in second
    assert "docker compose run --rm --no-deps setup cat" in second
    assert ApiToken.objects.filter(digest=token_digest(token)).exists()


EMAIL_KEYS = ("EMAIL_ENCRYPTION_KEYS", "EMAIL_BLIND_INDEX_KEY")


def test_first_start_makes_the_email_keys_once_into_a_file_of_their_own(tmp_path):
    volume = tmp_path / "state"
    without_keys = {name: "" for name in EMAIL_KEYS}

    first = secrets_step(volume, **without_keys)
    lines = (volume / "email-keys.env").read_text().splitlines()
    made = dict(line.split("=", 1) for line in lines)
    second = secrets_step(volume, **without_keys)

    assert set(made) == set(EMAIL_KEYS)
    assert set(stored(volume)) == set(SECRETS)  # the other secrets' file is as it was
    # Production rules accept them (a one-key ring).
    ring, _ = email_keys_load(
        keyring_text=made["EMAIL_ENCRYPTION_KEYS"],
        blind_index_text=made["EMAIL_BLIND_INDEX_KEY"],
        debug=False,
    )
    assert [key_id for key_id, _ in ring] == ["k1"]
    assert first.count("kept in the volume at") == 4
    assert second.count("reusing the one made on the first start") == 4
    assert (volume / "email-keys.env").read_text().splitlines() == lines
    assert (volume / "email-keys.env").stat().st_mode & 0o777 == 0o600

    assert environment_seen(volume, EMAIL_KEYS, **without_keys) == made
    given = random_email_keys()
    assert environment_seen(volume, EMAIL_KEYS, **given) == given
