"""The customer chat page."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from chatbot import selectors


@ensure_csrf_cookie
def chat_page(request: HttpRequest) -> HttpResponse:
    """Render the conversation so far (readable without JavaScript) and bind the session."""
    if not request.session.session_key:
        request.session["customer"] = True
        request.session.save()
    conversation = selectors.conversation_for_session(session_key=request.session.session_key)
    messages = selectors.conversation_messages(conversation=conversation) if conversation else []
    return render(
        request,
        "chatbot/chat.html",
        {"conversation": conversation, "chat_messages": messages},
    )
