"""The agent console pages. Thin: check the agent, call one service, redirect back.

Every action is a CSRF-protected POST; the page's script may send the same form with
fetch (Accept: application/json) and gets {"ok", "detail"} instead of a redirect.
"""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from chatbot.models import Conversation
from feedback import selectors, services
from feedback.agents import is_agent
from feedback.models import Flag

LOGIN_URL = "feedback:login"


def agent_required(view):
    """Anonymous users go to the login page; logged-in non-agents get 403."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse(LOGIN_URL))
        if not is_agent(request.user):
            raise PermissionDenied("Only support agents can use the console.")
        return view(request, *args, **kwargs)

    return wrapped


@require_GET
@agent_required
def console(request: HttpRequest) -> HttpResponse:
    query = selectors.QueueQuery.from_params(request.GET)
    return render(
        request,
        "feedback/console.html",
        {
            "conversations": selectors.conversation_queue(query=query, agent=request.user),
            "query": query,
            "queue_filters": selectors.QUEUE_FILTERS,
            "statuses": Conversation.Status.choices,
            "waiting": selectors.waiting_count(),
        },
    )


@require_GET
@agent_required
def conversation(request: HttpRequest, conversation_id) -> HttpResponse:
    detail = selectors.conversation_detail(conversation_id=conversation_id)
    if detail is None:
        raise Http404("No such conversation.")
    return render(
        request,
        "feedback/conversation.html",
        {
            "detail": detail,
            "conversation": detail.conversation,
            "review": detail.review,
            "holding": detail.conversation.status == Conversation.Status.AGENT
            and detail.review.handled_by_id == request.user.pk,
            "flag_reasons": Flag.Reason.choices,
        },
    )


def _optional_int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError as exc:
        raise services.ConsoleActionError("bad_value", "Pick someone from the list.") from exc


def _no_fields(post) -> dict:
    return {}


def _text(post) -> dict:
    return {"text": post.get("text", "")}


# action: (service, what it reads from the form, what to tell the agent when done)
CONVERSATION_ACTIONS = {
    "take_over": (services.conversation_take_over, _no_fields, "You are now answering."),
    "hand_back": (services.conversation_hand_back, _no_fields, "The bot answers again."),
    "close": (services.conversation_close, _no_fields, "Conversation closed."),
    "reviewed": (services.conversation_mark_reviewed, _no_fields, "Marked as reviewed."),
    "reply": (services.agent_message_send, _text, "Message sent."),
    "note": (services.note_add, _text, "Note added."),
    "assign": (
        services.conversation_assign,
        lambda post: {"assignee_id": _optional_int(post.get("assignee"))},
        "Assignment saved.",
    ),
}
MESSAGE_ACTIONS = {
    "correct": (services.correction_submit, _text, "Correction saved; the original is kept."),
    "rate": (services.message_rate, lambda post: {"value": post.get("value", "")}, "Rated."),
    "flag": (
        services.message_flag,
        lambda post: {"reason": post.get("reason", ""), "note": post.get("note", "")},
        "Reply flagged.",
    ),
    "regression": (services.regression_case_add, _no_fields, "Added to the regression set."),
}


ANSWER_ACTIONS = {
    "revoke": (
        services.approved_answer_revoke,
        _no_fields,
        "Revoked: the bot no longer gives this answer.",
    ),
    "edit": (
        services.approved_answer_edit,
        _text,
        "Saved: the bot gives the new text from now on (kept as a correction).",
    ),
}


def _respond(request: HttpRequest, back_to: str, *, ok: bool, detail: str) -> HttpResponse:
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"ok": ok, "detail": detail}, status=200 if ok else 409)
    (messages.success if ok else messages.error)(request, detail)
    return redirect(back_to)


def _run(request, entry, back_to: str, **ids) -> HttpResponse:
    service, fields, done = entry
    try:
        service(agent=request.user, **ids, **fields(request.POST))
    except services.ConsoleActionError as exc:
        return _respond(request, back_to, ok=False, detail=exc.detail)
    return _respond(request, back_to, ok=True, detail=done)


def _conversation_url(conversation_id) -> str:
    return reverse("feedback:conversation", kwargs={"conversation_id": conversation_id})


@require_POST
@agent_required
def conversation_action(request: HttpRequest, conversation_id, action: str) -> HttpResponse:
    if action not in CONVERSATION_ACTIONS:
        raise Http404("Unknown action.")
    entry = CONVERSATION_ACTIONS[action]
    back_to = _conversation_url(conversation_id)
    return _run(request, entry, back_to, conversation_id=conversation_id)


@require_POST
@agent_required
def message_action(request: HttpRequest, message_id, action: str) -> HttpResponse:
    if action not in MESSAGE_ACTIONS:
        raise Http404("Unknown action.")
    conversation_id = (
        Conversation.objects.filter(messages__pk=message_id).values_list("pk", flat=True).first()
    )
    if conversation_id is None:
        raise Http404("No such message.")
    entry = MESSAGE_ACTIONS[action]
    response = _run(request, entry, _conversation_url(conversation_id), message_id=message_id)
    if response.status_code == 302:
        response["Location"] += f"#m-{message_id}"
    return response


@require_GET
@agent_required
def approved_answers(request: HttpRequest) -> HttpResponse:
    """What the bot answers word for word or from its prompt: list, edit, revoke."""
    query = selectors.AnswerQuery.from_params(request.GET)
    return render(
        request,
        "feedback/answers.html",
        {
            "answers": selectors.approved_answers(query=query),
            "query": query,
            "waiting": selectors.waiting_count(),
        },
    )


@require_POST
@agent_required
def answer_action(request: HttpRequest, answer_id: int, action: str) -> HttpResponse:
    if action not in ANSWER_ACTIONS:
        raise Http404("Unknown action.")
    back_to = reverse("feedback:answers") + f"#a-{answer_id}"
    return _run(request, ANSWER_ACTIONS[action], back_to, answer_id=answer_id)
