"""Settings for the test suite: the real settings plus the test workflows' app.

With ``AGENTOPS_TEST_PG_URL`` set (``python -m tests.servers`` does that), the suite runs on
that PostgreSQL and uses ``AGENTOPS_TEST_REDIS_URL`` as broker and channel layer.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("AGENTOPS_APPS", "tests.testapp")
os.environ.setdefault(
    "AGENTOPS_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test")
)
if os.environ.get("AGENTOPS_TEST_PG_URL"):
    os.environ["DATABASE_URL"] = os.environ["AGENTOPS_TEST_PG_URL"]
    os.environ["CELERY_BROKER_URL"] = os.environ["AGENTOPS_TEST_REDIS_URL"]
    os.environ["CHANNEL_LAYER_URL"] = os.environ["AGENTOPS_TEST_REDIS_URL"]

from agentops.settings import *  # noqa: F403

# Users made by the tests hash their passwords cheaply (the production hasher takes a fifth of
# a second a password, several times per test). The real hashers stay listed after it, so
# passwords set by the product's own processes (the browser tests' servers) still verify.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
