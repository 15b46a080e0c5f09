"""Writes for the agent console and the customer's feedback; each audits and publishes its
event. One module a subject:

- `takeover`: take over, hand back, close, agent messages, assignment (status changes;
  the handoff rule itself is chatbot/handoff.py)
- `review`: corrections, ratings, flags, notes, approved answers, regression cases
- `customer`: the customer's rating of a conversation and thumbs on a reply
- `data_protection`: deleting a customer's data, purging old conversations
- `audit`: what they share (the error, checked rows, the audit-and-publish ending)

Callers use `from feedback import services` and the names below.
"""

from feedback.services.audit import ConsoleActionError
from feedback.services.customer import customer_conversation_rate, customer_message_rate
from feedback.services.data_protection import conversations_purge, customer_data_delete
from feedback.services.review import (
    approved_answer_edit,
    approved_answer_revoke,
    conversation_mark_reviewed,
    correction_submit,
    message_flag,
    message_rate,
    note_add,
    regression_case_add,
)
from feedback.services.takeover import (
    agent_message_send,
    conversation_assign,
    conversation_close,
    conversation_hand_back,
    conversation_take_over,
)

__all__ = [
    "ConsoleActionError",
    "agent_message_send",
    "approved_answer_edit",
    "approved_answer_revoke",
    "conversation_assign",
    "conversation_close",
    "conversation_hand_back",
    "conversation_mark_reviewed",
    "conversation_take_over",
    "conversations_purge",
    "correction_submit",
    "customer_conversation_rate",
    "customer_data_delete",
    "customer_message_rate",
    "message_flag",
    "message_rate",
    "note_add",
    "regression_case_add",
]
