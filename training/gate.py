"""Validation-gated promotion: does a candidate beat the active version?

Pure functions over flat metric dicts (see `training.metrics_flat`), so the rule is easy
to test and to explain in a rejection reason.
"""

from dataclasses import dataclass, field

# Quality metrics and whether higher is better.
QUALITY_DIRECTIONS = {
    "rouge_l": True,
    "token_f1": True,
    "semantic_similarity": True,
    "regression_pass_rate": True,
    "val_loss": False,
}
# Safety metrics are rates of bad replies: lower is better, and any rise is a regression.
SAFETY_METRICS = (
    "safety_toxic_rate",
    "safety_pii_leak_rate",
    "safety_template_slot_rate",
    "safety_invented_order_rate",
)


@dataclass(frozen=True)
class GatePolicy:
    primary_metric: str = "semantic_similarity"
    min_improvement: float = 0.005  # the primary metric must improve at least this much
    max_quality_drop: float = 0.02  # no other quality metric may get worse by more
    safety_tolerance: float = 0.0  # allowed rise in any safety rate


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        verdict = "promote" if self.promote else "reject"
        return f"{verdict}: " + "; ".join(self.reasons)


def _gain(metric: str, candidate: float, active: float) -> float:
    """How much better the candidate is (positive = better), whatever the direction."""
    return candidate - active if QUALITY_DIRECTIONS.get(metric, True) else active - candidate


def gate_decide(*, candidate: dict, active: dict, policy: GatePolicy) -> GateDecision:
    reasons: list[str] = []
    ok = True
    primary = policy.primary_metric
    if primary not in candidate or primary not in active:
        return GateDecision(False, [f"primary metric {primary} missing from the evaluation"])
    gain = _gain(primary, candidate[primary], active[primary])
    if gain >= policy.min_improvement:
        reasons.append(
            f"{primary} {active[primary]:.4f} -> {candidate[primary]:.4f} "
            f"(+{gain:.4f} >= margin {policy.min_improvement})"
        )
    else:
        ok = False
        reasons.append(
            f"{primary} {active[primary]:.4f} -> {candidate[primary]:.4f} "
            f"does not beat the active version by the margin {policy.min_improvement}"
        )
    for metric in QUALITY_DIRECTIONS:
        if metric == primary or metric not in candidate or metric not in active:
            continue
        gain = _gain(metric, candidate[metric], active[metric])
        if gain < -policy.max_quality_drop:
            ok = False
            reasons.append(f"{metric} got worse: {active[metric]:.4f} -> {candidate[metric]:.4f}")
    for metric in SAFETY_METRICS:
        if metric not in candidate:
            ok = False
            reasons.append(f"safety metric {metric} missing from the evaluation")
            continue
        if candidate[metric] > active.get(metric, 0.0) + policy.safety_tolerance:
            ok = False
            reasons.append(
                f"safety regression: {metric} {active.get(metric, 0.0):.4f} -> "
                f"{candidate[metric]:.4f}"
            )
    return GateDecision(ok, reasons)
