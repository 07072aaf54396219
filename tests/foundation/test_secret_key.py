"""berth refuses to start on a database server with the embedded default's
public SECRET_KEY; the embedded default itself still needs nothing."""

import subprocess
import sys

from tests.conftest import ROOT

POSTGRES = "postgres://berth@db.example:5432/berth"


def manage_check(tmp_path, **env):
    # A clean environment: the caller's SECRET_KEY, if any, must not leak in.
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "BERTH_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_database_server_without_a_secret_key_refuses_to_start(tmp_path):
    result = manage_check(tmp_path, DATABASE_URL=POSTGRES)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr, result.stderr[-2000:]
    assert "(postgresql)" in result.stderr
    assert "Set SECRET_KEY to a long random value" in result.stderr


def test_an_empty_secret_key_counts_as_unset(tmp_path):
    result = manage_check(tmp_path, DATABASE_URL=POSTGRES, SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_a_database_server_with_a_secret_key_starts(tmp_path):
    result = manage_check(tmp_path, DATABASE_URL=POSTGRES, SECRET_KEY="k" * 50)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_embedded_default_needs_no_secret_key(tmp_path):
    result = manage_check(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
