"""Both login pages lock out repeated failed logins (django-axes)."""

import pytest

from tests.helpers import PASSWORD


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/agent/login/", "/admin/login/"])
def test_repeated_failed_logins_lock_the_login_page(client, agent, url):
    statuses = [
        client.post(url, {"username": "alice", "password": "wrong-guess"}).status_code
        for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]  # the form again, then locked out
    response = client.post(url, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
