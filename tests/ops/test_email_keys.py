"""The email keys' settings: with debug off every process stops in one line on a keyring or a
blind-index key that is missing, malformed, short or published; with debug on the development
keys stand in (viswals/email_keys.py)."""

from __future__ import annotations

import re
import secrets
import subprocess

import pytest

from tests.support.environment import ROOT, random_secret_key, settings_value
from viswals.email_keys import (
    DEVELOPMENT_EMAIL_BLIND_INDEX_KEY,
    DEVELOPMENT_EMAIL_ENCRYPTION_KEYS,
    EmailKeyError,
    email_keys_load,
)
from viswals.secret_key import STARTUP_FAILURE


def key(size: int = 32) -> str:
    return secrets.token_urlsafe(size)


def production(**env: str) -> dict[str, str]:
    return {"DJANGO_SECRET_KEY": random_secret_key(), **env}


def test_keys_are_read_as_a_ring_the_current_first():
    first, second, blind = key(), key(), key()
    result = settings_value(
        "[i for i, _ in settings.EMAIL_ENCRYPTION_KEYS], "
        "[(i, len(k)) for i, k in settings.EMAIL_BLIND_INDEX_KEYS]",
        **production(EMAIL_ENCRYPTION_KEYS=f"k2:{first}, k1:{second}", EMAIL_BLIND_INDEX_KEY=blind),
    )
    assert result.stdout.strip() == "['k2', 'k1'] [('default', 32)]", result.stderr


def test_the_blind_index_key_may_be_a_ring_while_it_rotates():
    result = settings_value(
        "[i for i, _ in settings.EMAIL_BLIND_INDEX_KEYS]",
        **production(
            EMAIL_ENCRYPTION_KEYS=f"k1:{key()}", EMAIL_BLIND_INDEX_KEY=f"b2:{key()},b1:{key(40)}"
        ),
    )
    assert result.stdout.strip() == "['b2', 'b1']", result.stderr


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "EMAIL_ENCRYPTION_KEYS is not set"),
        (
            {"EMAIL_ENCRYPTION_KEYS": f"k1:{key()}", "EMAIL_BLIND_INDEX_KEY": ""},
            "EMAIL_BLIND_INDEX_KEY is not set",
        ),
        ({"EMAIL_ENCRYPTION_KEYS": key()}, "entry 1 is not id:key"),
        ({"EMAIL_ENCRYPTION_KEYS": f"k1:{key(16)}"}, "is 16 bytes, not 32"),
        ({"EMAIL_ENCRYPTION_KEYS": f"k1:{key()},k1:{key()}"}, "the id 'k1' is used twice"),
        ({"EMAIL_ENCRYPTION_KEYS": "k1:replace-with-your-own-key"}, "not base64"),
        (
            {"EMAIL_ENCRYPTION_KEYS": f"k1:{key()}", "EMAIL_BLIND_INDEX_KEY": key(24)},
            "EMAIL_BLIND_INDEX_KEY is 24 bytes, shorter than 32",
        ),
        (
            {"EMAIL_ENCRYPTION_KEYS": f"k1:{key()}", "EMAIL_BLIND_INDEX_KEY": f"b2:{key(24)}"},
            "EMAIL_BLIND_INDEX_KEY (b2) is 24 bytes, shorter than 32",
        ),
        (
            {"EMAIL_ENCRYPTION_KEYS": DEVELOPMENT_EMAIL_ENCRYPTION_KEYS},
            "EMAIL_ENCRYPTION_KEYS (dev) is a key published",
        ),
        (
            {
                "EMAIL_ENCRYPTION_KEYS": f"k1:{key()}",
                "EMAIL_BLIND_INDEX_KEY": DEVELOPMENT_EMAIL_BLIND_INDEX_KEY,
            },
            "EMAIL_BLIND_INDEX_KEY is a key published",
        ),
    ],
)
def test_any_process_stops_with_one_line_on_an_unusable_email_key(env, reason):
    env = {"EMAIL_BLIND_INDEX_KEY": key(), **env}
    result = settings_value("settings.DEBUG", **production(**env))

    assert result.returncode == STARTUP_FAILURE, result.stdout + result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("viswals: ")
    assert reason in result.stderr
    assert "token_urlsafe(32)" in result.stderr  # says how to make one
    for value in env.values():  # never repeats a key
        secret = value.partition(":")[2] or value
        assert len(secret) < 8 or secret not in result.stderr


def test_a_blind_index_key_is_not_an_encryption_key():
    shared = key()
    with pytest.raises(EmailKeyError, match="also a key of EMAIL_ENCRYPTION_KEYS"):
        email_keys_load(keyring_text=f"k1:{shared}", blind_index_text=shared, debug=True)


def test_debug_uses_the_development_keys_unless_given():
    result = settings_value("settings.EMAIL_ENCRYPTION_KEYS[0][0]", DJANGO_DEBUG="true")
    # The checkout's local keys once `make run` made them (scripts/run-local.sh), else dev.
    made = (ROOT / ".local" / "email_keys.env").exists()
    assert result.stdout.strip() == ("local1" if made else "dev"), result.stderr
    given = settings_value(
        "settings.EMAIL_ENCRYPTION_KEYS[0][0]",
        DJANGO_DEBUG="true",
        EMAIL_ENCRYPTION_KEYS=f"mine:{key()}",
    )
    assert given.stdout.strip() == "mine", given.stderr
    malformed = settings_value("1", DJANGO_DEBUG="true", EMAIL_ENCRYPTION_KEYS="mine:short")
    assert malformed.returncode == STARTUP_FAILURE
    assert len(malformed.stderr.splitlines()) == 1


def test_every_email_key_the_repository_sets_is_refused():
    # Files of the repository (not .local/, which holds make run's real keys) that set either
    # variable to a value, bare or as a shell or Compose default: production refuses each.
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    bare = re.compile(r"(EMAIL_ENCRYPTION_KEYS|EMAIL_BLIND_INDEX_KEY)[=:][ \t]*([^\s\"'$]+)")
    default = re.compile(r"\$\{(EMAIL_ENCRYPTION_KEYS|EMAIL_BLIND_INDEX_KEY):?-([^}]+)\}")
    found = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".csv", ".png", ".py"}:
            continue
        text = path.read_text(errors="replace")
        for variable, value in [*bare.findall(text), *default.findall(text)]:
            found.append(name)
            if variable == "EMAIL_ENCRYPTION_KEYS":
                keyring, blind = value, key()
            else:
                keyring, blind = f"k1:{key()}", value
            with pytest.raises(EmailKeyError):
                email_keys_load(keyring_text=keyring, blind_index_text=blind, debug=False)
    assert ".env.example" in found
