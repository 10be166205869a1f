"""Settings for the test suite: the real settings plus the test workflows' app."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("AGENTOPS_APPS", "tests.testapp")
os.environ.setdefault(
    "AGENTOPS_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test")
)

from agentops.settings import *  # noqa: F403
