"""The API's rate limit: counted atomically in the cache that ``CACHE_URL`` names, so web
processes sharing a Redis share one limit per token; ``CACHE_URL`` is parsed strictly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache

from runs.api import ratelimit
from runs.api_models import ApiToken
from tests.agentops.test_settings import start as start_django
from tests.conftest import wait_for
from tests.processes import database_url, redis_client
from tests.runs.api_support import assert_problem, member, token_client
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_rate_windows() -> Any:
    cache.clear()
    yield
    cache.clear()


# --- CACHE_URL ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("memcached://cache:11211", "CACHE_URL: expected locmem:// or redis://, got memcached://"),
        ("redis-cache", "CACHE_URL: expected locmem:// or redis://, got no scheme"),
        ("redis://", "CACHE_URL: not a valid redis:// URL"),
        ("redis://cache:port/0", "CACHE_URL: not a valid redis:// URL"),
        ("file://user:hunter22@x/", "CACHE_URL: expected locmem:// or redis://, got file://"),
    ],
)
def test_a_bad_cache_url_stops_start_up_naming_the_variable(value, message, tmp_path):
    result = start_django(AGENTOPS_DATA_DIR=str(tmp_path), CACHE_URL=value)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr
    assert "hunter22" not in result.stderr  # a URL may carry a password: never echoed


@pytest.mark.parametrize(
    ("value", "backend", "location"),
    [
        (None, "django.core.cache.backends.locmem.LocMemCache", "agentops"),
        ("locmem://", "django.core.cache.backends.locmem.LocMemCache", "agentops"),
        (
            "redis://:pw@cache.internal:6380/2",
            "django.core.cache.backends.redis.RedisCache",
            "redis://:pw@cache.internal:6380/2",
        ),
        ("rediss://cache/0", "django.core.cache.backends.redis.RedisCache", "rediss://cache/0"),
    ],
)
def test_cache_url_chooses_the_backend(value, backend, location, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTOPS_", "DATABASE"))}
    env.pop("CACHE_URL", None)
    env.update(DJANGO_SETTINGS_MODULE="agentops.settings", AGENTOPS_DATA_DIR=str(tmp_path))
    if value is not None:
        env["CACHE_URL"] = value
    code = "import django, json; django.setup(); from django.conf import settings; "
    code += "print(json.dumps(settings.CACHES['default']))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "BACKEND": backend,
        "LOCATION": location,
    }


# --- counting -----------------------------------------------------------------------------
def test_concurrent_hits_each_get_their_own_count() -> None:
    now = time.time()
    counts: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(40)

    def hit() -> None:
        barrier.wait(timeout=10)
        count = ratelimit.hit("token:race", now=now)
        with lock:
            counts.append(count)

    threads = [threading.Thread(target=hit) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(counts) == list(range(1, 41))  # no lost update, no double count


def test_windows_are_per_minute_and_per_caller() -> None:
    minute = 1_000_000 * 60.0
    assert [ratelimit.hit("a", now=minute + s) for s in (0, 1, 59.9)] == [1, 2, 3]
    assert ratelimit.hit("a", now=minute + 60) == 1
    assert ratelimit.hit("b", now=minute + 1) == 1
    assert ratelimit.seconds_left(minute + 59.5) == 1
    assert ratelimit.seconds_left(minute + 0.5) == 60


@pytest.mark.django_db
def test_an_unreachable_cache_lets_requests_through(team, settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    settings.AGENTOPS_API_RATE_PER_MINUTE = 1
    api = token_client(member("alice", team), team)
    for _ in range(3):
        assert api.get("/api/v1/runs").status_code == 200
    assert "the cache is unavailable" in caplog.text


# --- shared across processes (Redis) --------------------------------------------------------
#: One web process: signs in with the token and sends REQUESTS requests when told to go.
CLIENT = """
import json, os, sys
import django
django.setup()
from django.test import Client
client = Client()
print("ready", flush=True)
sys.stdin.readline()
auth = {"Authorization": "Bearer " + os.environ["TOKEN"]}
codes = [client.get("/api/v1/runs", headers=auth).status_code
         for _ in range(int(os.environ["REQUESTS"]))]
print(json.dumps(codes), flush=True)
"""


@pytest.mark.pg
@pytest.mark.django_db(transaction=True)
def test_two_processes_share_one_limit(team, tmp_path):
    limit, each = 25, 20
    redis = redis_client()
    db = redis.connection_pool.connection_kwargs.get("db", 0) + 5  # not the broker's database
    url = f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}/{db}"
    shared = type(redis).from_url(url)
    shared.flushdb()
    _, text = ApiToken.mint(user=member("alice", team), team=team)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOPS_TEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE="agentops.settings",
        DATABASE_URL=database_url(),
        CACHE_URL=url,
        AGENTOPS_API_RATE_PER_MINUTE=str(limit),
        AGENTOPS_APPS="tests.testapp",
        AGENTOPS_DATA_DIR=str(tmp_path),
        DJANGO_ALLOWED_HOSTS="testserver",
        TOKEN=text,
        REQUESTS=str(each),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # Both send within one window: start early enough in a minute to finish inside it.
        wait_for(lambda: time.time() % 60 < 40, timeout=30, every=0.2)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    codes = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        codes.append(json.loads(out.strip().splitlines()[-1]))
    together = [c for mine in codes for c in mine]
    # One count for both: 25 of the 40 requests pass, whichever process sent them.
    assert sorted(set(together)) == [200, 429]
    assert together.count(200) == limit and together.count(429) == 2 * each - limit
    assert all(200 in mine for mine in codes)  # both processes were counted
    keys = shared.keys(f"*{ratelimit.KEY_PREFIX}:*")
    assert len(keys) == 1 and 0 < shared.ttl(keys[0]) <= 2 * ratelimit.WINDOW
    assert int(shared.get(keys[0])) == 2 * each


@pytest.mark.django_db
def test_the_limit_over_the_api_is_a_429_problem(team, settings):
    settings.AGENTOPS_API_RATE_PER_MINUTE = 2
    api = token_client(member("alice", team), team)
    assert [api.get("/api/v1/runs").status_code for _ in range(2)] == [200, 200]
    problem = assert_problem(api.get("/api/v1/runs"), 429)
    assert problem["type"].endswith("rate-limited")
