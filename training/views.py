"""The training dashboard at /dashboard/ (staff with the training permission)."""

import json
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from training import playground, runs, selectors
from training.charts import loss_curve_svg
from training.models import ModelVersion, TrainingRun
from training.monitoring import predecessor_of, version_live_numbers
from training.registry import RegistryError, version_promote, version_reject, version_rollback

PERMISSION = "training.manage_training"


def training_staff_required(view):
    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not (request.user.is_staff and request.user.has_perm(PERMISSION)):
            raise PermissionDenied("The training dashboard needs the training permission.")
        return view(request, *args, **kwargs)

    return wrapped


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


@require_GET
@training_staff_required
def dashboard(request: HttpRequest) -> HttpResponse:
    recent = selectors.runs_recent()
    versions = selectors.versions_table()
    active = next((v for v in versions if v.status == ModelVersion.Status.ACTIVE), None)
    latest_candidate = next((v for v in versions if "compared_with" in (v.metrics or {})), None)
    live = []
    if active:
        previous = predecessor_of(active)
        live = [version_live_numbers(v) for v in (active, previous) if v]
    return render(
        request,
        "training/dashboard.html",
        {
            "runs": [
                (run, loss_curve_svg(run.loss_history), selectors.run_status_data(run))
                for run in recent
            ],
            "versions": versions,
            "active": active,
            "compared": latest_candidate,
            "comparison": selectors.metrics_side_by_side(latest_candidate)
            if latest_candidate
            else [],
            "unfinished": runs.run_unfinished(),
            "live": live,
        },
    )


@require_GET
@training_staff_required
def status_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"runs": [selectors.run_status_data(r) for r in selectors.runs_recent()]})


@require_GET
@training_staff_required
def run_loss_svg(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=run_id)
    return HttpResponse(loss_curve_svg(run.loss_history))


@require_POST
@training_staff_required
def retrain_now(request: HttpRequest) -> HttpResponse:
    try:
        run = runs.run_request(requested_by=_actor(request), trigger="manual")
        messages.success(request, f"Training run {run.pk} queued.")
    except runs.TrainingBusy as exc:
        messages.error(request, str(exc))
    return redirect("training:dashboard")


@require_POST
@training_staff_required
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = runs.run_cancel(run_id=run_id, actor=_actor(request))
    messages.info(request, f"Run {run.pk}: cancel requested ({run.status}).")
    return redirect("training:dashboard")


@require_POST
@training_staff_required
def version_action(request: HttpRequest, version_id: int, action: str) -> HttpResponse:
    reason = request.POST.get("reason", "").strip() or f"{action} from the dashboard"
    actor = _actor(request)
    try:
        if action == "promote":
            override = request.POST.get("override") == "1"
            version = version_promote(
                version_id=version_id, actor=actor, reason=reason, override=override
            )
            messages.success(request, f"v{version.number} is now active.")
        elif action == "reject":
            version = version_reject(version_id=version_id, actor=actor, reason=reason)
            messages.info(request, f"v{version.number} rejected.")
        elif action == "rollback":
            version = version_rollback(actor=actor, reason=reason, to_version_id=version_id)
            messages.success(request, f"Rolled back: v{version.number} is active again.")
        else:
            raise PermissionDenied("Unknown action")
    except (RegistryError, ModelVersion.DoesNotExist) as exc:
        messages.error(request, str(exc))
    return redirect("training:dashboard")


@require_GET
@training_staff_required
def playground_page(request: HttpRequest) -> HttpResponse:
    """Chat with up to three versions side by side (the active one and the newest candidate
    chosen at first)."""
    versions = playground.playground_versions()
    active = [v for v in versions if v.status == ModelVersion.Status.ACTIVE]
    candidates = [v for v in versions if v.status == ModelVersion.Status.CANDIDATE]
    chosen = {v.pk for v in (active + candidates)[:2]}
    return render(
        request,
        "training/playground.html",
        {"versions": versions, "chosen": chosen, "max_columns": 3},
    )


@require_POST
@training_staff_required
def playground_reply(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """POST {"version_id", "messages": [...], "grounded"}: the reply streamed as JSON lines
    (playground.playground_reply); a bad request gets 400 with {"code", "detail"}."""
    try:
        body = json.loads(request.body or b"null")
        if not isinstance(body, dict):
            raise playground.PlaygroundError("bad_request", "Send a JSON object.")
        version = playground.playground_version(body.get("version_id"))
        turns = playground.playground_messages_clean(body.get("messages"))
    except ValueError:
        return JsonResponse({"code": "bad_request", "detail": "The body is not JSON."}, status=400)
    except playground.PlaygroundError as exc:
        return JsonResponse({"code": exc.code, "detail": exc.detail}, status=400)

    async def lines():
        events = playground.playground_reply(
            version=version, turns=turns, grounded=body.get("grounded", True) is not False
        )
        async for event in events:
            yield json.dumps(event) + "\n"

    response = StreamingHttpResponse(lines(), content_type="application/x-ndjson")
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the tokens back
    response["Cache-Control"] = "no-store"
    return response
