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
