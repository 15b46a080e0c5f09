"""An admin uses the training dashboard in headless Chromium."""

import pytest
from django.contrib.auth.models import Permission, User

from training.models import ModelVersion, TrainingRun
from training.registry import base_version_ensure

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_sees_runs_and_versions_and_starts_then_cancels_a_retrain(app_server, browser):
    user = User.objects.create_user("trainer", password="a-long-test-password", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="manage_training"))
    v1 = base_version_ensure()
    ModelVersion.objects.create(
        number=2,
        status="candidate",
        parent=v1,
        artifact_path="/nowhere",
        metrics={
            "evaluation": {
                "semantic_similarity": 0.71,
                "rouge_l": 0.2,
                "val_loss": 1.9,
                "engine": "llama.cpp Q8_0",
                "cases": 253,
                "generated": 253,
                "reused": 0,
            },
            "compared_with": {"version": 1, "evaluation": {"semantic_similarity": 0.64}},
        },
    )
    TrainingRun.objects.create(
        requested_by="trainer",
        status="succeeded",
        loss_history=[{"step": s, "loss": 3 - s / 10} for s in range(1, 11)],
    )
    url = app_server()
    page = browser.new_page()
    page.goto(url + "/dashboard/")
    assert "/admin/login/" in page.url  # not logged in yet
    page.fill("#id_username", "trainer")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.goto(url + "/dashboard/")

    assert page.locator("#versions tr[data-version='2'] .status").inner_text() == "Candidate"
    assert page.locator(".loss-curve polyline").count() == 1
    assert "0.7100" in page.locator("#comparison").inner_text()
    scored_by = page.locator("#scored-by").inner_text()
    assert "Scored by llama.cpp Q8_0 on 253 frozen cases (253 replies generated" in scored_by

    page.click("#retrain-now")
    page.wait_for_selector(".flash li:has-text('queued')")
    run = TrainingRun.objects.get(status="queued")
    row = page.locator(f"tr[data-run-id='{run.pk}']")
    assert "Queued" in row.inner_text()
    page.wait_for_timeout(2500)  # one live refresh later, still labelled the same way
    assert "Queued" in row.locator(".status").inner_text()
    assert page.locator("#retrain-now").is_disabled()

    row.locator("button:has-text('Cancel')").click()
    page.wait_for_selector(".flash li:has-text('cancel requested')")
    run.refresh_from_db()
    assert run.status == "cancelled"
    # A promotion with a missing artifact is refused and the active version kept.
    page.locator("tr[data-version='2'] button:has-text('Promote')").click()
    page.wait_for_selector(".flash li.flash-error")
    assert ModelVersion.objects.get(status="active").number == 1
