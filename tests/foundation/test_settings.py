"""Settings come from the environment; the embedded default needs nothing."""

import json
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import ROOT

PRINT = """
import json
from django.conf import settings as s
db = s.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "conn_max_age": db["CONN_MAX_AGE"],
    "broker": s.CELERY_BROKER_URL, "transport": s.CELERY_BROKER_TRANSPORT_OPTIONS,
    "hosts": s.ALLOWED_HOSTS, "debug": s.DEBUG, "auth": s.BERTH_AUTH_MODE,
    "quota_port": s.BERTH_QUOTA_DEFAULTS["port"], "secret": s.SECRET_KEY,
    "db_options": db.get("OPTIONS", {}),
}))
"""


def settings_with(tmp_path, **env):
    base = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "BERTH_DATA_DIR": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + PRINT],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        return result
    return json.loads(result.stdout)


def test_nothing_set_means_sqlite_and_a_serverless_broker(tmp_path):
    s = settings_with(tmp_path)
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"] == str(tmp_path / "data" / "berth.sqlite3")
    assert s["broker"] == "filesystem://localhost//"
    assert s["transport"]["data_folder_in"] == s["transport"]["data_folder_out"]
    assert (tmp_path / "data" / "broker" / "queue").is_dir()
    assert s["debug"] is False
    assert s["auth"] == "token"


def test_postgres_and_redis_from_urls(tmp_path):
    s = settings_with(
        tmp_path,
        DATABASE_URL="postgres://berth:pw@db.example:5433/berth",
        CELERY_BROKER_URL="redis://cache.example:6379/2",
        BERTH_CONN_MAX_AGE="120",
        SECRET_KEY="s3cret",
    )
    assert s["engine"] == "django.db.backends.postgresql"
    assert s["name"] == "berth"
    assert s["conn_max_age"] == 120
    assert s["broker"] == "redis://cache.example:6379/2"
    assert s["transport"]["visibility_timeout"] == 3600


def test_postgres_prepares_repeated_statements_unless_told_not_to(tmp_path):
    url = "postgres://berth@db.example/berth"
    s = settings_with(tmp_path, DATABASE_URL=url, SECRET_KEY="s3cret")
    assert s["db_options"] == {"server_side_binding": True, "prepare_threshold": 5}
    # Behind a transaction-pooling PgBouncer prepared statements break.
    s = settings_with(
        tmp_path, DATABASE_URL=url, SECRET_KEY="s3cret", BERTH_DB_PREPARE_THRESHOLD="-1"
    )
    assert "server_side_binding" not in s["db_options"]
    assert "prepare_threshold" not in s["db_options"]


@pytest.mark.postgres
def test_a_statement_run_often_is_prepared_on_the_server(db):
    from django.db import connection

    from compute.models import Host

    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                ['%"compute_host"."name" = $1%'],
            )
            return cursor.fetchone()[0]

    before = prepared()
    for n in range(settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"] + 1):
        list(Host.objects.filter(name=f"h{n}"))
    assert prepared() == before + 1


def test_lists_numbers_and_knobs(tmp_path):
    s = settings_with(
        tmp_path,
        ALLOWED_HOSTS="berth.example,10.0.0.5",
        BERTH_QUOTA_PORT="7",
        BERTH_AUTH_MODE="noauth",
        SECRET_KEY="s3cret",
        DEBUG="true",
    )
    assert s["hosts"] == ["berth.example", "10.0.0.5"]
    assert s["quota_port"] == 7
    assert s["auth"] == "noauth"
    assert s["secret"] == "s3cret"
    assert s["debug"] is True


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (
            {"BERTH_QUOTA_PORT": "many"},
            "ValueError: invalid literal for int() with base 10: 'many'",
        ),
        (
            {"DATABASE_URL": "nosuch://x", "SECRET_KEY": "s3cret"},
            "'nosuch' isn't an available database backend",
        ),
    ],
)
def test_bad_values_fail_at_start_with_the_reason(tmp_path, env, reason):
    result = settings_with(tmp_path, **env)
    assert result.returncode != 0
    assert reason in result.stderr, result.stderr[-2000:]
