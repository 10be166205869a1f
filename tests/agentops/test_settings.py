"""Settings are parsed strictly: a bad value stops start-up naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTOPS_", "DATABASE"))}
    clean.update(DJANGO_SETTINGS_MODULE="agentops.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('ok')"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTOPS_LEASE_SECONDS": "soon"}, "AGENTOPS_LEASE_SECONDS: Not a valid number"),
        ({"AGENTOPS_LEASE_SECONDS": "-3"}, "AGENTOPS_LEASE_SECONDS: must be greater than zero"),
        ({"AGENTOPS_EMBEDDED_WORKERS": "2.5"}, "AGENTOPS_EMBEDDED_WORKERS"),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL: only sqlite:// and postgres://"),
        ({"CELERY_BROKER_URL": "sqs://x"}, "CELERY_BROKER_URL: expected memory://"),
        ({"CHANNEL_LAYER_URL": "ipc://x"}, "CHANNEL_LAYER_URL: expected memory://"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(env, message, tmp_path):
    result = start(AGENTOPS_DATA_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_defaults_give_the_embedded_deployment(tmp_path):
    result = start(AGENTOPS_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
