import pytest
from django.contrib.auth.models import Permission, User

from training.models import ModelVersion, TrainingRun
from training.registry import base_version_ensure

pytestmark = pytest.mark.django_db


def make_user(name, *, staff=True, perm=True):
    user = User.objects.create_user(name, password="pw-long-enough-123", is_staff=staff)
    if perm:
        user.user_permissions.add(Permission.objects.get(codename="manage_training"))
    return user


@pytest.mark.parametrize(
    ("who", "expected"),
    [("anonymous", 302), ("customer", 403), ("staff_without_perm", 403), ("trainer", 200)],
)
def test_dashboard_needs_staff_with_the_training_permission(client, who, expected):
    users = {
        "customer": lambda: make_user("cust", staff=False, perm=False),
        "staff_without_perm": lambda: make_user("agent", perm=False),
        "trainer": lambda: make_user("trainer"),
    }
    if who in users:
        client.force_login(users[who]())
    for url in ("/dashboard/", "/dashboard/status.json"):
        response = client.get(url)
        assert response.status_code == expected, url
    if expected == 302:
        assert "/admin/login/" in client.get("/dashboard/")["Location"]


def test_actions_refuse_get_and_unprivileged_posts(client):
    base_version_ensure()
    client.force_login(make_user("agent", perm=False))
    assert client.post("/dashboard/retrain/").status_code == 403
    assert not TrainingRun.objects.exists()
    client.force_login(make_user("trainer"))
    assert client.get("/dashboard/retrain/").status_code == 405


def test_post_without_csrf_token_is_refused(client):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(make_user("trainer"))
    assert strict.post("/dashboard/retrain/").status_code == 403
    assert not TrainingRun.objects.exists()


def test_second_retrain_request_is_refused_with_a_clear_message(
    client, django_capture_on_commit_callbacks
):
    client.force_login(make_user("trainer"))
    TrainingRun.objects.create(requested_by="someone", status="running")
    response = client.post("/dashboard/retrain/", follow=True)
    assert "already running" in response.content.decode()
    assert TrainingRun.objects.count() == 1


def test_dashboard_shows_runs_versions_and_escapes_text(client):
    client.force_login(make_user("trainer"))
    v1 = base_version_ensure()
    ModelVersion.objects.create(
        number=2, status="rejected", parent=v1, status_reason="<b>worse</b>", artifact_path="x"
    )
    TrainingRun.objects.create(
        requested_by="trainer",
        status="failed",
        error="<script>boom</script>",
        loss_history=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "val_loss": 1.7}],
    )
    page = client.get("/dashboard/").content.decode()
    assert "&lt;script&gt;boom&lt;/script&gt;" in page and "<script>boom" not in page
    assert "&lt;b&gt;worse&lt;/b&gt;" in page
    assert 'class="loss-curve"' in page and "polyline" in page
    assert "Promote anyway" in page
    assert 'id="live-numbers"' in page and "v1 (active)" in page


def test_status_json_gives_the_stage_progress_and_an_eta_while_running(client):
    from datetime import timedelta

    from django.utils import timezone

    client.force_login(make_user("trainer"))
    base_version_ensure()
    TrainingRun.objects.create(
        requested_by="trainer",
        status="succeeded",
        stage_timings={"data": 20, "train": 300, "evaluate_candidate": 100, "evaluate_active": 90},
    )
    running = TrainingRun.objects.create(
        requested_by="trainer",
        status="running",
        stage="train",
        stage_started_at=timezone.now() - timedelta(seconds=40),
        stage_timings={"data": 12.5},
        step=10,
        total_steps=30,
        progress=10 / 30,
    )
    data = client.get("/dashboard/status.json").json()["runs"][0]
    assert data["id"] == running.pk and data["stage"] == "train"
    assert (data["stage_number"], data["stages"]) == (2, 5)
    # 10 steps in 40 s: 20 steps left take 80 s; then both evaluations as last time, gate ~0.
    assert 78 <= data["stage_eta_seconds"] <= 84
    assert 78 + 190 <= data["eta_seconds"] <= 84 + 190

    # Evaluating the candidate: the active version's evaluation is expected to take as long.
    TrainingRun.objects.filter(pk=running.pk).update(
        stage="evaluate_candidate",
        stage_started_at=timezone.now() - timedelta(seconds=30),
        stage_timings={"data": 12.5, "train": 120},
        step=100,
        total_steps=200,
    )
    data = client.get("/dashboard/status.json").json()["runs"][0]
    assert 28 <= data["stage_eta_seconds"] <= 34
    assert 28 + 90 <= data["eta_seconds"] <= 34 + 90
    page = client.get("/dashboard/").content.decode()
    assert "evaluate_candidate (3/5)" in page and "ETA" in page


def test_eta_without_history_covers_the_current_stage_only():
    from training.selectors import eta_estimate

    eta = eta_estimate(stage="train", elapsed=30, done=3, total=9, timings={}, previous={})
    assert eta == {"stage_eta_seconds": 60, "eta_seconds": None}
    eta = eta_estimate(
        stage="evaluate_active",
        elapsed=5,
        done=0,
        total=0,
        timings={"evaluate_candidate": 50},
        previous={},
    )
    assert eta == {"stage_eta_seconds": 45, "eta_seconds": 45}
    eta = eta_estimate(
        stage="evaluate_active", elapsed=10, done=50, total=200, timings={}, previous={}
    )
    assert eta == {"stage_eta_seconds": 30, "eta_seconds": 30}
