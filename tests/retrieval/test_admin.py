"""Admins manage articles in the Django admin; every save goes through the services."""

import pytest

from chatbot.knowledge import selectors
from chatbot.knowledge.models import Article

pytestmark = pytest.mark.django_db


def test_admin_add_indexes_the_article_and_unpublish_action_hides_it(
    admin_client, celery_eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            "/admin/chatbot/article/add/",
            {
                "title": "Gift wrapping",
                "slug": "gift-wrapping",
                "kind": "article",
                "tags": "gifts",
                "published": "on",
                "body": "Every order can be gift wrapped for 3.50 at checkout.",
                "passages-TOTAL_FORMS": "0",
                "passages-INITIAL_FORMS": "0",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert len(callbacks) == 1
    article = Article.objects.get(slug="gift-wrapping")
    assert article.passages.count() == 1
    hits = selectors.passages_search(query="Can you gift wrap my order?")
    assert [h.title for h in hits] == ["Gift wrapping"]

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/chatbot/article/",
            {"action": "unpublish", "_selected_action": [article.pk]},
        )
    assert not Article.objects.get(pk=article.pk).published
    assert selectors.passages_search(query="Can you gift wrap my order?", min_score=0) == []


def test_customers_and_staff_without_permission_cannot_reach_the_articles(
    client, django_user_model
):
    assert client.get("/admin/chatbot/article/").status_code == 302
    staff = django_user_model.objects.create_user("agent", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/chatbot/article/").status_code == 403
