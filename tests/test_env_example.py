"""`.env.example` lists every environment variable the settings read, and nothing stale."""

import ast
import dataclasses
import re
from pathlib import Path

from training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILES = [ROOT / "chatbot" / "settings.py", ROOT / "deploy" / "production.py"]
READERS = {"env", "env_bool", "env_int", "env_float", "env_list", "os.environ.get", "os.getenv"}


def env_reads(path: Path) -> set[str]:
    """Names passed as a literal to settings' env helpers, os.environ.get/getenv or [...]."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in READERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
        elif (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(node.slice.value)
    return names


def documented() -> dict[str, str]:
    """NAME -> its line in .env.example (`# NAME=value   (comment)` or `NAME=value`)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found = {}
    for line in lines:
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            found[match.group(1)] = line
    return found


def test_env_reads_finds_the_settings_reads():
    names = set().union(*(env_reads(path) for path in SETTINGS_FILES))
    # A few the settings are known to read, so a broken parser cannot pass quietly.
    assert {"DATABASE_URL", "DJANGO_SECRET_KEY", "TRAINING_GATE_MIN_IMPROVEMENT"} <= names
    assert {"WIDGET_ALLOWED_ORIGINS", "DJANGO_HSTS_SECONDS"} <= names
    assert len(names) > 50


def test_every_setting_read_is_in_env_example():
    names = set().union(*(env_reads(path) for path in SETTINGS_FILES))
    missing = sorted(names - documented().keys())
    assert not missing, f"add these to .env.example (with a one-line comment): {missing}"


def test_env_example_lists_nothing_that_is_not_read():
    train_fields = {f"TRAINING_{f.name.upper()}" for f in dataclasses.fields(TrainConfig)}
    known = set().union(*(env_reads(path) for path in SETTINGS_FILES)) | train_fields
    stale = sorted(documented().keys() - known)
    assert not stale, f".env.example lists variables nothing reads: {stale}"


def test_every_entry_says_what_it_does():
    bare = [line for line in documented().values() if "(" not in line.split("=", 1)[1]]
    assert not bare, f"give these a one-line comment in parentheses: {bare}"
