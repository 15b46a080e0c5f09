"""Data protection: deleting one customer's data, purging conversations past retention."""

import logging
from datetime import timedelta

from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone

from chatbot.models import Conversation, Message
from chatbot.pii import pii_mask
from feedback.exports import exports_forget
from feedback.models import AuditEvent, Correction, RegressionCase
from feedback.services.audit import ConsoleActionError, audit_log
from training.data.snapshot import snapshots_forget
from training.pipeline import evaluation_samples_forget

log = logging.getLogger(__name__)

Status = Conversation.Status
Action = AuditEvent.Action


@transaction.atomic
def customer_data_delete(*, session_key: str, actor=None) -> dict:
    """Delete everything stored about one customer (their browser session): conversations,
    messages, corrections, ratings, flags, notes, regression cases made from them, and the
    session itself; their rows in dataset snapshots and in exports on disk, and versions'
    evaluation samples of their cases. Audit entries about those conversations keep
    who/what/when only."""
    if not session_key:
        raise ConsoleActionError("no_customer", "Name the customer's session.")
    ids = list(Conversation.objects.filter(session_key=session_key).values_list("id", flat=True))
    corrections = set(
        Correction.objects.filter(message__conversation_id__in=ids).values_list("id", flat=True)
    )
    cases = RegressionCase.objects.filter(conversation_id__in=ids)
    case_ids = set(cases.values_list("id", flat=True))
    conversation_ids = {str(i) for i in ids}
    # Files first: if rewriting one fails, nothing in the database is deleted either.
    snapshot_rows = snapshots_forget(conversation_ids=conversation_ids, correction_ids=corrections)
    export_rows = exports_forget(conversation_ids=conversation_ids, correction_ids=corrections)
    samples = evaluation_samples_forget(correction_ids=corrections, regression_case_ids=case_ids)
    cases.delete()
    AuditEvent.objects.filter(conversation_id__in=ids).update(detail={})
    messages = Message.objects.filter(conversation_id__in=ids).count()
    Conversation.objects.filter(pk__in=ids).delete()
    Session.objects.filter(session_key=session_key).delete()
    counts = {
        "conversations": len(ids),
        "messages": messages,
        "regression_cases": len(case_ids),
        "snapshot_rows": snapshot_rows,
        "export_rows": export_rows,
        "evaluation_samples": samples,
    }
    audit_log(
        actor=actor,
        action=Action.CUSTOMER_DATA_DELETE,
        conversations=len(ids),
        messages=messages,
        regression_cases=len(case_ids),
        snapshot_rows=snapshot_rows,
        export_rows=export_rows,
        evaluation_samples=samples,
    )
    log.info("Deleted customer data: %s", counts)
    return counts


@transaction.atomic
def conversations_purge(*, older_than_days: int, actor=None) -> int:
    """Delete conversations untouched for `older_than_days` (not ones a human is handling).

    Regression cases made from them survive (the gate needs them) with personal data in
    their prompt and expected reply masked.
    """
    if older_than_days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = Conversation.objects.filter(updated_at__lt=cutoff).exclude(
        status__in=[Status.WAITING, Status.AGENT]
    )
    ids = list(old.values_list("id", flat=True))
    if not ids:
        return 0
    AuditEvent.objects.filter(conversation_id__in=ids).update(detail={})
    for case in RegressionCase.objects.filter(conversation_id__in=ids):
        case.prompt = [{**turn, "content": pii_mask(turn["content"])} for turn in case.prompt]
        case.expected = pii_mask(case.expected)
        case.save(update_fields=["prompt", "expected", "updated_at"])
    Conversation.objects.filter(pk__in=ids).delete()
    audit_log(actor=actor, action=Action.PURGE, conversations=len(ids), days=older_than_days)
    return len(ids)
