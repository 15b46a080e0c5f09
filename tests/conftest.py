import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A fresh artifact store and cache for each test session (inherited by the worker and
# model-server processes tests start), so nothing from an earlier run is found there.
_artifacts = tempfile.mkdtemp(prefix="chatbot-test-artifacts-")
atexit.register(shutil.rmtree, _artifacts, True)
os.environ.setdefault("ARTIFACT_STORE_DIR", os.path.join(_artifacts, "store"))
os.environ.setdefault("ARTIFACT_CACHE_DIR", os.path.join(_artifacts, "cache"))


def pytest_sessionstart(session):
    """The tests run on the real services. Without DATABASE_URL and REDIS_URL settings fall
    back to SQLite and the in-memory layer, where worker tests cannot run: refuse, unless
    asked for explicitly."""
    from django.conf import settings

    if (not settings.DATABASE_URL or not settings.REDIS_URL) and not os.environ.get(
        "ALLOW_EMBEDDED_TESTS"
    ):
        pytest.exit(
            "The tests need PostgreSQL and Redis: run `make test` (or set DATABASE_URL and "
            "REDIS_URL); ALLOW_EMBEDDED_TESTS=1 runs them on SQLite and the in-memory layer.",
            returncode=2,
        )


pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.sockets",
    "tests.fixtures.servers",
    "tests.fixtures.browser",
    "tests.fixtures.isolation",
]
