from training.gate import GatePolicy, gate_decide

SAFE = {
    "safety_toxic_rate": 0.0,
    "safety_pii_leak_rate": 0.0,
    "safety_template_slot_rate": 0.1,
    "safety_invented_order_rate": 0.05,
}
ACTIVE = {"semantic_similarity": 0.60, "rouge_l": 0.20, "val_loss": 2.0, **SAFE}
POLICY = GatePolicy(primary_metric="semantic_similarity", min_improvement=0.01)


def test_better_candidate_is_promoted():
    candidate = {**ACTIVE, "semantic_similarity": 0.65, "rouge_l": 0.25, "val_loss": 1.8}
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert decision.promote, decision.reasons
    assert "0.6000 -> 0.6500" in decision.summary


def test_improvement_below_the_margin_is_rejected():
    candidate = {**ACTIVE, "semantic_similarity": 0.605}
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert not decision.promote
    assert "margin" in decision.summary


def test_worse_candidate_is_rejected():
    candidate = {**ACTIVE, "semantic_similarity": 0.50}
    assert not gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY).promote


def test_safety_regression_rejects_even_a_better_candidate():
    candidate = {**ACTIVE, "semantic_similarity": 0.70, "safety_pii_leak_rate": 0.02}
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert not decision.promote
    assert "safety regression: safety_pii_leak_rate" in decision.summary


def test_a_big_drop_in_another_quality_metric_rejects():
    candidate = {**ACTIVE, "semantic_similarity": 0.70, "val_loss": 2.5}
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert not decision.promote
    assert "val_loss got worse" in decision.summary


def test_missing_safety_metric_rejects():
    candidate = {k: v for k, v in ACTIVE.items() if k != "safety_toxic_rate"}
    candidate["semantic_similarity"] = 0.9
    assert not gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY).promote
