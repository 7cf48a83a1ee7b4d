"""Test settings: the real settings module on Postgres and Redis (started by `make test`)."""

from __future__ import annotations

import os
import re
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/wave")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
# pytest-xdist: each process its own Redis database (tests clear the cache, workers consume the broker): the one
# named, minus the worker's index (the controller's environment, inherited, names the same for all). The test
# database gets the worker's suffix from pytest-django (test_wave_gw0, ...).
os.environ["REDIS_URL"] = re.sub(
    r"/(\d+)$",
    lambda db: f"/{int(db.group(1)) - int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0')[2:])}",
    os.environ["REDIS_URL"],
)
os.environ.setdefault("WAVE_DATA_DIR", tempfile.mkdtemp(prefix="wave-test-data-"))
# Nothing listens here: tests that need a build registry point the setting at a registry fixture.
os.environ.setdefault("WAVE_BUILD_REPO", "127.0.0.1:9/wave/build")
os.environ.setdefault("WAVE_COMMIT_ID", "testcommit")
# Registry fixtures listen on loopback: allowed as sources here, refused in the SSRF tests that clear this.
os.environ.setdefault("WAVE_SSRF_ALLOW", "127.0.0.1,localhost")

from wave_site.settings import *  # noqa: F403
