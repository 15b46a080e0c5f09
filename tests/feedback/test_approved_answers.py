"""Approved-answer memory: a correction answers the next customer at once, on PostgreSQL,
with the real MiniLM embeddings, through the services, the console and the chat socket."""

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.urls import reverse

from chatbot.approved.models import ApprovedAnswer
from chatbot.approved.store import answer_index_clear, answer_match
from chatbot.grounding import grounding_find
from chatbot.knowledge.embedding import texts_embed
from chatbot.models import Message
from feedback import services
from feedback.models import AuditEvent, Correction
from tests.helpers import frames_until

RETURNS = "How many days do I have to return an item?"
RETURNS_PARAPHRASE = "How many days do I have to send an item back?"
RETURNS_POLICY = (
    "You can return any unused item within 45 days of delivery; we email you a prepaid "
    "DHL label from your account page."
)
UNRELATED = "Do you sell gift cards?"


@pytest.fixture(autouse=True)
def fresh_index():
    answer_index_clear()
    yield
    answer_index_clear()


def match(question: str, **kwargs):
    return answer_match(texts_embed([question]), **kwargs)


@pytest.mark.django_db
def test_correction_is_remembered_and_matches_paraphrases_not_other_questions(
    agent, make_conversation
):
    _, (_, reply) = make_conversation([("customer", RETURNS), ("bot", "14 days, I think.")])

    services.correction_submit(message_id=reply.id, agent=agent, text=RETURNS_POLICY)

    record = ApprovedAnswer.objects.get(message=reply)
    assert record.active and record.origin == "correction" and record.author_name == "Alice"
    assert record.question == RETURNS
    found = match(RETURNS_PARAPHRASE)
    assert found is not None and found.answer == RETURNS_POLICY and found.verbatim
    assert found.source()["title"] == "Approved answer, corrected by Alice"
    assert match(UNRELATED) is None
    audit = AuditEvent.objects.get(action="correct")
    assert audit.detail["approved_answer_id"] == record.pk


@pytest.mark.django_db
def test_personal_data_is_masked_before_it_is_remembered(agent, make_conversation):
    _, (_, reply) = make_conversation(
        [("customer", "My email is jo@example.com, how long is delivery?"), ("bot", "...")]
    )
    services.correction_submit(
        message_id=reply.id, agent=agent, text="3 days. We wrote to jo@example.com about it."
    )
    record = ApprovedAnswer.objects.get(message=reply)
    assert "jo@example.com" not in record.question + record.answer
    assert "[email]" in record.answer


@pytest.mark.django_db
def test_newer_correction_replaces_older_and_revoked_answers_leave_the_memory(
    agent, make_agent, make_conversation
):
    _, (_, reply) = make_conversation([("customer", RETURNS), ("bot", "14 days.")])
    services.correction_submit(message_id=reply.id, agent=agent, text="30 days.")
    services.correction_submit(message_id=reply.id, agent=agent, text=RETURNS_POLICY)
    assert ApprovedAnswer.objects.count() == 1
    assert match(RETURNS_PARAPHRASE).answer == RETURNS_POLICY

    # Another customer asked the same; a newer correction there wins over the older one.
    _, (_, other) = make_conversation(
        [("customer", RETURNS), ("bot", "Two weeks.")], session_key="customer-2"
    )
    services.correction_submit(message_id=other.id, agent=agent, text="60 days from now on.")
    assert match(RETURNS_PARAPHRASE).answer == "60 days from now on."

    bob = make_agent("bob")
    revoked = services.approved_answer_revoke(answer_id=other.approved_answer.pk, agent=bob)
    assert not revoked.active and revoked.revoked_by_name == "bob"
    assert match(RETURNS_PARAPHRASE).answer == RETURNS_POLICY
    services.approved_answer_revoke(answer_id=reply.approved_answer.pk, agent=bob)
    assert match(RETURNS_PARAPHRASE) is None
    assert AuditEvent.objects.filter(action="answer_revoke").count() == 2

    # Editing a revoked answer saves a correction and puts it back in use.
    services.approved_answer_edit(answer_id=reply.approved_answer.pk, agent=bob, text="40 days.")
    assert Correction.objects.filter(message=reply).first().text == "40 days."
    assert match(RETURNS_PARAPHRASE).answer == "40 days."


@pytest.mark.django_db
def test_newest_answer_of_a_close_group_keeps_the_best_match_confidence(agent, make_conversation):
    """The newest answer among near-equal matches is the question's current answer; whether
    it is given verbatim depends on how close the best match is, not the newest one."""
    _, (_, older) = make_conversation([("customer", RETURNS), ("bot", "14 days.")])
    services.correction_submit(message_id=older.id, agent=agent, text="30 days.")
    _, (_, newer) = make_conversation(
        [("customer", RETURNS.lower().rstrip("?")), ("bot", "Two weeks.")], session_key="c-2"
    )
    services.correction_submit(message_id=newer.id, agent=agent, text=RETURNS_POLICY)
    best, newest = (
        texts_embed([RETURNS, RETURNS.lower().rstrip("?")]) @ texts_embed([RETURNS_PARAPHRASE]).T
    )
    assert best[0] > newest[0] > best[0] - 0.05  # the newer question is the weaker match
    between = float(best[0] + newest[0]) / 2
    found = match(RETURNS_PARAPHRASE, verbatim_score=between)
    assert found.answer == RETURNS_POLICY and found.verbatim, found
    assert not match(RETURNS_PARAPHRASE, verbatim_score=float(best[0]) + 0.01).verbatim


@pytest.mark.django_db
def test_reply_rated_good_is_approved_and_rated_bad_leaves(agent, make_conversation):
    _, (_, reply) = make_conversation([("customer", RETURNS), ("bot", RETURNS_POLICY)])
    services.message_rate(message_id=reply.id, agent=agent, value="good")
    record = ApprovedAnswer.objects.get(message=reply)
    assert record.origin == "approved_reply" and record.active
    assert match(RETURNS_PARAPHRASE).source()["title"] == "Approved answer, approved by Alice"

    services.message_rate(message_id=reply.id, agent=agent, value="bad")
    assert match(RETURNS_PARAPHRASE) is None

    # A corrected reply keeps its correction whatever the original's rating.
    services.correction_submit(message_id=reply.id, agent=agent, text="45 days.")
    services.message_rate(message_id=reply.id, agent=agent, value="bad")
    assert match(RETURNS_PARAPHRASE).answer == "45 days."


@pytest.mark.django_db
def test_looser_match_goes_into_the_prompt_ahead_of_the_knowledge_base(
    settings, agent, make_conversation
):
    settings.KNOWLEDGE_RETRIEVAL = False
    _, (_, reply) = make_conversation([("customer", RETURNS), ("bot", "14 days.")])
    services.correction_submit(message_id=reply.id, agent=agent, text=RETURNS_POLICY)
    question = "Is there a time limit for returns?"
    found = match(question)
    assert found is not None and not found.verbatim, found  # between the two thresholds
    grounding = grounding_find(question)
    assert not grounding.verbatim
    assert RETURNS_POLICY in grounding.system()
    assert grounding.sources()[0]["kind"] == "approved"
    # The approved exchange is shown to the model before the conversation.
    history = [("customer", question)]
    assert grounding.messages(history)[1:] == [
        {"role": "user", "content": RETURNS},
        {"role": "assistant", "content": RETURNS_POLICY},
        {"role": "user", "content": question},
    ]

    # The model is asked to favour the approved answer's tokens, and those continuing it in
    # order more; a verbatim match needs no model, no match leaves the defaults, and
    # APPROVED_COPY_BIAS=0 switches it off.
    params = grounding.params()
    assert params.copy_text == RETURNS_POLICY
    assert params.copy_bias == settings.APPROVED_COPY_BIAS > 0
    assert params.copy_follow_bias == settings.APPROVED_COPY_FOLLOW_BIAS > 0
    assert grounding_find(RETURNS_PARAPHRASE).verbatim
    assert grounding_find(UNRELATED).params().copy_bias == 0
    settings.APPROVED_COPY_BIAS = 0
    assert grounding_find(question).params().copy_bias == 0

    settings.APPROVED_ANSWERS = False
    assert grounding_find(question).approved is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("tiny_model")
async def test_next_customer_gets_the_corrected_answer_through_the_socket(
    chat_socket, agent, settings
):
    settings.KNOWLEDGE_RETRIEVAL = False

    async def session() -> str:
        def make():
            store = SessionStore()
            store["customer"] = True
            store.create()
            return store.session_key

        return await database_sync_to_async(make)()

    first = await chat_socket(await session())
    await first.receive_json_from(timeout=10)
    await first.send_json_to({"type": "customer_message", "text": RETURNS})
    model_reply = (await frames_until(first, "bot_message"))[-1]
    assert model_reply["reply_kind"] == "model"

    await database_sync_to_async(services.correction_submit)(
        message_id=model_reply["message_id"], agent=agent, text=RETURNS_POLICY
    )

    second = await chat_socket(await session())
    await second.receive_json_from(timeout=10)
    await second.send_json_to({"type": "customer_message", "text": RETURNS_PARAPHRASE})
    frames = await frames_until(second, "bot_message")
    final = frames[-1]
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    assert len(tokens) > 5 and "".join(tokens) == final["text"] == RETURNS_POLICY
    assert final["reply_kind"] == "approved" and final["model_version"] is None
    assert final["sources"][0]["title"] == "Approved answer, corrected by Alice"
    stored = await database_sync_to_async(Message.objects.get)(pk=final["message_id"])
    assert stored.reply_kind == "approved" and stored.text == RETURNS_POLICY
    used = await database_sync_to_async(ApprovedAnswer.objects.get)()
    assert used.times_used == 1


@pytest.mark.django_db
def test_console_lists_edits_and_revokes_answers(client, agent, make_conversation):
    _, (_, reply) = make_conversation([("customer", "<b>returns?</b>"), ("bot", "14 days.")])
    services.correction_submit(message_id=reply.id, agent=agent, text="45 days <script>x</script>")
    record = ApprovedAnswer.objects.get()
    url = reverse("feedback:answers")

    assert client.get(url).status_code == 302  # anonymous: to the login page
    client.force_login(agent)
    page = client.get(url).content.decode()
    assert "&lt;script&gt;" in page and "<script>x" not in page
    assert "&lt;b&gt;returns?&lt;/b&gt;" in page

    revoke = reverse("feedback:answer_action", args=[record.pk, "revoke"])
    response = client.post(revoke)
    assert response.status_code == 302
    record.refresh_from_db()
    assert not record.active
    assert "45 days" not in client.get(url).content.decode()  # default list: in use only
    assert "45 days" in client.get(url + "?state=revoked").content.decode()

    edit = reverse("feedback:answer_action", args=[record.pk, "edit"])
    client.post(edit, {"text": "50 days."})
    record.refresh_from_db()
    assert record.active and record.answer == "50 days."


@pytest.mark.django_db
def test_console_answers_need_an_agent_and_csrf(client, agent, make_conversation):
    from django.contrib.auth.models import User
    from django.test import Client

    _, (_, reply) = make_conversation([("customer", RETURNS), ("bot", "14 days.")])
    services.correction_submit(message_id=reply.id, agent=agent, text=RETURNS_POLICY)
    record = ApprovedAnswer.objects.get()
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("feedback:answers")).status_code == 403
    revoke = reverse("feedback:answer_action", args=[record.pk, "revoke"])
    assert client.post(revoke).status_code == 403

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(agent)
    assert csrf_client.post(revoke).status_code == 403
    record.refresh_from_db()
    assert record.active


@pytest.mark.django_db
def test_a_revoked_correction_no_longer_trains(agent, make_conversation):
    from feedback.exports import correction_examples, preference_pairs, sft_examples

    _, (_, reply) = make_conversation([("customer", RETURNS), ("bot", "14 days.")])
    services.correction_submit(message_id=reply.id, agent=agent, text=RETURNS_POLICY)
    assert [e["messages"][-1]["content"] for e in correction_examples()] == [RETURNS_POLICY]
    assert len(preference_pairs()) == 1

    services.approved_answer_revoke(answer_id=reply.approved_answer.pk, agent=agent)
    assert correction_examples() == [] and preference_pairs() == []
    assert all(RETURNS_POLICY not in str(e["messages"]) for e in sft_examples())
