"""Identity API: what a sign-in and a token check cost, in process.

Times, through Django's test client against the configured database (no
HTTP server: the figures are berth's own work), p50/p95 of:
- a password sign-in (POST /identity/v3/auth/tokens, project scope): the
  password hasher's work factor dominates it, by design;
- a token sign-in (the token method, as a client renewing or rescoping);
- a token validation (GET /identity/v3/auth/tokens);
- an authenticated read on another API (GET /networking/v2.0/networks,
  the project's few networks), against the same read with a static token
  made by create_token: a Keystone token costs no more than berth's own.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth_bench \\
        .venv/bin/python bench/sign_ins.py [--requests 500]
"""

import argparse
import statistics
import time

import benchdb

PROJECT = "bench-identity"
USERNAME = "bench-identity-user"
PASSWORD = "bench-identity-password"
PASSWORD_SIGN_INS = 20


def timed(call, count: int) -> tuple[float, float]:
    """p50 and p95 of ``count`` calls, in ms; each must answer 2xx."""
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        response = call()
        spent.append((time.perf_counter() - started) * 1000)
        assert 200 <= response.status_code < 300, response.content
    return statistics.median(spent), benchdb.percentile(spent, 95)


def run(requests: int) -> None:
    from django.contrib.auth.hashers import get_hasher
    from django.test import Client
    from django.test.utils import setup_test_environment

    from identity.services import token_create, user_password_set

    setup_test_environment()
    user_password_set(project_name=PROJECT, username=USERNAME, role="member", password=PASSWORD)
    _, static = token_create(project_name=PROJECT, username=USERNAME, role="member")
    client = Client()
    user = {"name": USERNAME, "domain": {"name": "Default"}, "password": PASSWORD}
    scope = {"project": {"name": PROJECT, "domain": {"id": "default"}}}
    password = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}}
    password["auth"]["scope"] = scope

    def sign_in(body):
        return client.post("/identity/v3/auth/tokens", body, content_type="application/json")

    raw = sign_in(password)["X-Subject-Token"]
    token = {"auth": {"identity": {"methods": ["token"], "token": {"id": raw}}}}
    networks = "/networking/v2.0/networks"
    hasher = get_hasher()
    rows = [
        (
            f"password sign-in ({hasher.algorithm}, {hasher.iterations} iterations)",
            timed(lambda: sign_in(password), PASSWORD_SIGN_INS),
        ),
        ("token sign-in (token method)", timed(lambda: sign_in(token), requests)),
        (
            "token validation",
            timed(
                lambda: client.get(
                    "/identity/v3/auth/tokens", HTTP_X_AUTH_TOKEN=raw, HTTP_X_SUBJECT_TOKEN=raw
                ),
                requests,
            ),
        ),
        (
            "GET networks, Keystone token",
            timed(lambda: client.get(networks, HTTP_X_AUTH_TOKEN=raw), requests),
        ),
        (
            "GET networks, create_token token",
            timed(lambda: client.get(networks, HTTP_X_AUTH_TOKEN=static), requests),
        ),
    ]
    print(f"{'call':<58} {'p50 ms':>8} {'p95 ms':>8}")
    for name, (p50, p95) in rows:
        print(f"{name:<58} {p50:>8.2f} {p95:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    benchdb.database_prepare()
    benchdb.project_delete(PROJECT)
    try:
        run(args.requests)
    finally:
        benchdb.project_delete(PROJECT)


if __name__ == "__main__":
    main()
