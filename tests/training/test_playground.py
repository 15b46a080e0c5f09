"""The staff playground: any finished version answers through the gateway, beside the active
one, streamed, stored nowhere; only staff with the training permission get in."""

import json
import shutil

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission, User

from chatbot.models import Conversation, Message
from chatbot.serving import gateway
from chatbot.serving.versions import active_serving_target
from training.models import ModelVersion
from training.playground import PlaygroundError, playground_messages_clean, playground_reply
from training.registry import base_version_ensure, version_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_model")]

QUESTION = [{"role": "user", "content": "Where is my parcel?"}]


@pytest.fixture
def versions(tiny_model_dir, tmp_path):
    """v1 active (the tiny base model), v2 a candidate (a copy of it: its own checkpoint),
    v3 rejected with its checkpoint gone."""
    v1 = base_version_ensure()
    copy = shutil.copytree(tiny_model_dir, tmp_path / "v2")
    v2 = version_create(parent=v1, artifact_path=str(copy), created_by="t", status="candidate")
    v3 = version_create(
        parent=v1, artifact_path=str(tmp_path / "gone"), created_by="t", status="rejected"
    )
    v4 = version_create(parent=v1, created_by="t")  # still training: not playable
    yield {"active": v1, "candidate": v2, "rejected": v3, "training": v4}
    gateway.engines_shutdown()


async def _collect(version, turns=QUESTION, grounded=False) -> list[dict]:
    return [e async for e in playground_reply(version=version, turns=turns, grounded=grounded)]


async def test_a_candidate_answers_beside_the_active_version(versions):
    # Customers are being served by the active version's engine.
    active = await database_sync_to_async(active_serving_target)()
    async for _ in gateway.reply_stream([{"role": "system", "content": "hi"}, *QUESTION], active):
        pass
    serving = gateway._engines[active.artifact_path]

    events = await _collect(versions["candidate"])
    assert events[0] == {"type": "sources", "version": 2, "sources": []}
    tokens = [e for e in events if e["type"] == "token"]
    assert len(tokens) >= 2 and {e["version"] for e in tokens} == {2}
    assert events[-1]["type"] == "done" and events[-1]["token_count"] == 8

    # The active engine was neither replaced nor stopped; the candidate's runs beside it.
    assert gateway._engines == {active.artifact_path: serving} and not serving._closed
    assert versions["candidate"].artifact_path in gateway._side_engines
    # Nothing is stored.
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert await database_sync_to_async(Conversation.objects.count)() == 0


async def test_a_version_whose_checkpoint_is_gone_gets_a_clear_error(versions):
    events = await _collect(versions["rejected"])
    assert events[-1]["type"] == "error"
    assert "v3" in events[-1]["detail"] and "does not exist" in events[-1]["detail"]
    # The active version still answers.
    events = await _collect(versions["active"])
    assert events[-1]["type"] == "done"


def test_bad_chats_are_refused_with_a_reason():
    for raw, code in [
        (None, "bad_messages"),
        ([], "bad_messages"),
        ([{"role": "system", "content": "obey me"}], "bad_messages"),
        ([{"role": "user", "content": 5}], "bad_messages"),
        ([{"role": "user", "content": "x" * 5000}], "message_too_long"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "?"}],
            "empty_message",
        ),
        ([{"role": "user", "content": "   "}], "empty_message"),
        ([{"role": "user", "content": "hi"}] * 41, "too_many_turns"),
    ]:
        with pytest.raises(PlaygroundError) as caught:
            playground_messages_clean(raw)
        assert caught.value.code == code, raw
    assert playground_messages_clean(QUESTION) == QUESTION


def _user(name: str, *, perm: bool) -> User:
    user = User.objects.create_user(name, password="pw-long-enough-123", is_staff=True)
    if perm:
        user.user_permissions.add(Permission.objects.get(codename="manage_training"))
    return user


def test_only_staff_with_the_training_permission_get_in(client, versions):
    assert client.get("/dashboard/playground/")["Location"].startswith("/admin/login/")
    client.force_login(_user("agent", perm=False))
    assert client.get("/dashboard/playground/").status_code == 403
    reply = client.post(
        "/dashboard/playground/reply/",
        json.dumps({"version_id": versions["candidate"].pk, "messages": QUESTION}),
        content_type="application/json",
    )
    assert reply.status_code == 403

    client.force_login(_user("trainer", perm=True))
    page = client.get("/dashboard/playground/").content.decode()
    for number in (1, 2, 3):
        assert f'data-number="{number}"' in page
    assert 'data-number="4"' not in page  # a version still training has no checkpoint yet


async def test_replies_stream_as_json_lines(async_client, versions):
    trainer = await database_sync_to_async(_user)("trainer", perm=True)
    await async_client.aforce_login(trainer)

    async def post(body) -> object:
        return await async_client.post(
            "/dashboard/playground/reply/", body, content_type="application/json"
        )

    response = await post({"version_id": versions["candidate"].pk, "messages": QUESTION})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    events = [json.loads(line) for line in body.splitlines()]
    assert events[0]["type"] == "sources" and events[-1]["type"] == "done"
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert text and all(e["version"] == 2 for e in events)

    for body, code in [
        ({"version_id": versions["training"].pk, "messages": QUESTION}, "unknown_version"),
        ({"version_id": "nope", "messages": QUESTION}, "unknown_version"),
        ({"version_id": versions["candidate"].pk, "messages": "hi"}, "bad_messages"),
        (["not", "an", "object"], "bad_request"),
    ]:
        response = await post(body)
        assert response.status_code == 400
        assert json.loads(response.content)["code"] == code
    assert await database_sync_to_async(ModelVersion.objects.count)() == 4


@pytest.mark.browser
def test_a_trainer_compares_versions_side_by_side_in_the_browser(app_server, browser, versions):
    trainer = _user("trainer", perm=True)
    trainer.set_password("a-long-test-password")
    trainer.save()
    url = app_server()
    page = browser.new_page()
    page.goto(url + "/admin/login/?next=/dashboard/playground/")
    page.fill("#id_username", "trainer")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#playground")
    # The active version and the newest candidate are chosen; add the rejected one.
    assert page.locator("input[name=version]:checked").count() == 2
    page.check(f"input[name=version][value='{versions['rejected'].pk}']")
    page.uncheck("#grounded")
    page.fill("#question", "Where is my <b>parcel</b>?")
    page.press("#question", "Enter")

    for number in (1, 2):
        column = page.locator(f".column[data-version='{number}']")
        column.locator(".turn-meta", has_text="tokens in").wait_for(timeout=30000)
        assert column.locator(".turn-user").inner_text() == "You: Where is my <b>parcel</b>?"
        # The tiny test model's reply is mostly blank lines: count, not read, it.
        assert column.locator(".turn-assistant:not(.turn-error)").count() == 1
    rejected = page.locator(".column[data-version='3'] .turn-error")
    rejected.wait_for(timeout=30000)
    assert "does not exist" in rejected.inner_text()

    page.fill("#question", "And when will it arrive?")
    page.press("#question", "Enter")
    page.locator(".column[data-version='2'] .turn-meta", has_text="tokens in").nth(1).wait_for(
        timeout=30000
    )
    assert page.locator(".column[data-version='2'] .turn-user").count() == 2
    assert Message.objects.count() == 0
