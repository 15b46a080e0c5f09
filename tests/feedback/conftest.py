import pytest

from chatbot.models import Conversation
from tests.helpers import PASSWORD, conversation_make, ws_headers


@pytest.fixture
def make_agent(db):
    from feedback.agents import agent_create

    def make(username="alice", **kwargs):
        return agent_create(username=username, password=PASSWORD, **kwargs)

    return make


@pytest.fixture
def agent(make_agent):
    return make_agent("alice", first_name="Alice")


@pytest.fixture
def make_conversation(db):
    """A conversation from (role, text) turns; returns (conversation, [messages])."""

    def make(turns, *, session_key="customer-1", status=Conversation.Status.BOT):
        return conversation_make(turns, session_key=session_key, status=status)

    return make


@pytest.fixture
async def agent_socket(chat_socket):
    """Open /ws/agent/ with a session cookie; every socket is disconnected at the end.

    Built on `chat_socket`, whose teardown (after this one) settles reply tasks and resets
    the channel layer once every socket of the test is closed."""
    from channels.testing import WebsocketCommunicator

    from chatbot.asgi import application

    opened = []

    async def open_socket(session_key=None):
        communicator = WebsocketCommunicator(
            application, "/ws/agent/", headers=ws_headers(session_key)
        )
        connected, code = await communicator.connect()
        opened.append(communicator)
        return connected, code, communicator

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()
