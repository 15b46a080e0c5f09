"""Unsafe defaults: production refuses to start unsafe, development is safe when nothing is
set, and processes say which settings they run with."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k" * 30 + "Q7x!p9Zr#2mW4vT6yB8n"


def python(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DJANGO_") and k not in ("DATA_DIR", "DATABASE_URL", "REDIS_URL")
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "DATA_DIR": str(tmp_path / "data"), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


SETTINGS = "import django; django.setup(); from django.conf import settings as s; "
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "deploy.production",
    "DJANGO_SECRET_KEY": STRONG_KEY,
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x",
    "REDIS_URL": "redis://127.0.0.1:6379/14",
}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_SECRET_KEY": "change-me"}, "too weak"),
        ({"DJANGO_DEBUG": "1"}, "DJANGO_DEBUG must be off"),
        # Model servers on other hosts answer anyone on the network without a shared key.
        ({"MODEL_SERVER_DISCOVER": "1"}, "MODEL_SERVER_API_KEY must be set"),
        ({"MODEL_SERVER_URL": "http://model-1.internal:8081"}, "MODEL_SERVER_API_KEY must be set"),
    ],
)
def test_production_refuses_to_start_unsafe(tmp_path, change, complaint):
    result = python(SETTINGS + "print(s.DEBUG)", tmp_path, **{**PRODUCTION, **change})
    assert result.returncode != 0 and complaint in result.stderr


def test_production_starts_when_safe(tmp_path):
    result = python(SETTINGS + "print(s.DEBUG)", tmp_path, **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    local = {"MODEL_SERVER_URL": "http://127.0.0.1:8081"}  # make run's own model server
    assert python(SETTINGS + "print(1)", tmp_path, **PRODUCTION, **local).returncode == 0
    keyed = {"MODEL_SERVER_DISCOVER": "1", "MODEL_SERVER_API_KEY": "k" * 32}
    assert python(SETTINGS + "print(1)", tmp_path, **PRODUCTION, **keyed).returncode == 0


def test_development_defaults_are_safe_and_the_key_is_this_installs_own(tmp_path):
    code = (
        "import chatbot.asgi; from django.conf import settings as s; print(s.DEBUG, s.SECRET_KEY)"
    )
    first = python(code, tmp_path)
    assert first.returncode == 0, first.stderr
    debug, key = first.stdout.split()
    assert debug == "False" and len(key) >= 50
    assert python(code, tmp_path).stdout.split()[1] == key  # kept across restarts
    other = python(code, tmp_path / "other-install").stdout.split()[1]
    assert other != key
    assert ((tmp_path / "data" / "secret_key").stat().st_mode & 0o077) == 0


@pytest.mark.parametrize("module", ["chatbot.asgi", "chatbot.celery"])
def test_a_process_without_a_settings_module_says_it_runs_development_settings(tmp_path, module):
    result = python(f"import {module}", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DJANGO_SETTINGS_MODULE is not set" in result.stderr
    assert "deploy.production" in result.stderr
    chosen = python(f"import {module}", tmp_path, **PRODUCTION)
    assert "DJANGO_SETTINGS_MODULE is not set" not in chosen.stderr
