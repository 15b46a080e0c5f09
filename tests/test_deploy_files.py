"""deploy/: the compose file, the proxy and the systemd units are well-formed and agree with
the Procfile. No container engine runs on the CI machines, so the compose file is checked as
data here (and by `docker compose config` where an engine answers); the units by
systemd-analyze."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ROLES = {"web", "worker", "trainer", "beat", "model"}


def procfile() -> dict[str, str]:
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def command_of(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_compose_runs_the_whole_stack():
    services = compose()["services"]
    assert {
        "postgres",
        "redis",
        "web-1",
        "web-2",
        "model",
        "worker",
        "trainer",
        "beat",
        "proxy",
    } <= set(services)
    app = [name for name, s in services.items() if s.get("image") == "chatbot:latest"]
    for name in app:
        env = services[name]["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "deploy.production"
        assert env["MODEL_SERVER_DISCOVER"] == "1"
        for secret in ("DJANGO_SECRET_KEY", "MODEL_SERVER_API_KEY"):
            assert ":?" in env[secret]  # required, never a default
        assert "artifacts:/srv/artifacts" in services[name]["volumes"]  # the shared store
    # One private data volume per long-running app service: nothing else is shared.
    private = [v for n in app for v in services[n]["volumes"] if not v.startswith("artifacts:")]
    assert len(private) == len(set(private))


def test_compose_commands_are_the_procfile_roles():
    services, roles = compose()["services"], procfile()
    assert set(roles) == ROLES
    for name, role in [("web-1", "web"), ("web-2", "web"), ("worker", "worker"), ("beat", "beat")]:
        process = re.search(r"-m (daphne|celery)", roles[role]).group(0)
        assert process in command_of(services[name])
    assert "--queues=training" in command_of(services["trainer"])
    assert "manage.py model_server" in command_of(services["model"])
    # A web node starting must not mark other nodes' replies in flight as failed.
    assert "replies_settle --older-than" in command_of(services["web-1"])


def test_the_proxy_passes_websockets_to_every_web_node():
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in conf
    assert "proxy_set_header Connection $connection_upgrade" in conf
    assert re.findall(r"server (web-\d):8000", conf) == ["web-1", "web-2"]


def test_the_image_runs_as_a_user_with_cpu_torch():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "download.pytorch.org/whl/cpu" in dockerfile
    assert "default_model_convert" in dockerfile  # the model converted at build


@pytest.mark.skipif(not shutil.which("docker"), reason="no docker client")
def test_compose_config_where_an_engine_runs():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers on this machine (checked as data above)")
    done = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={
            "DJANGO_SECRET_KEY": "x" * 50,
            "MODEL_SERVER_API_KEY": "y" * 20,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        },
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_systemd_units_verify_cleanly(tmp_path):
    """systemd-analyze verify on the units (interpreter path pointed at this Python, since
    /opt/chatbot does not exist here); any warning fails."""
    import sys

    for unit in (DEPLOY / "systemd").glob("chatbot*"):
        text = unit.read_text().replace("/opt/chatbot/venv/bin/python", sys.executable)
        name = unit.name.replace("@.service", "@8000.service")
        (tmp_path / name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    services = {p.name for p in (DEPLOY / "systemd").glob("*.service")}
    assert services == {f"chatbot-{r}.service" for r in ROLES - {"web"}} | {"chatbot-web@.service"}
