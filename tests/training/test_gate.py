import math
import random

from training.gate import (
    GatePolicy,
    bootstrap_interval,
    gate_decide,
    sign_test_p,
    stratified_bootstrap_interval,
)

SAFE = {
    "safety_toxic_rate": 0.0,
    "safety_pii_leak_rate": 0.0,
    "safety_template_slot_rate": 0.1,
    "safety_invented_order_rate": 0.05,
}
POLICY = GatePolicy(primary_metric="semantic_similarity", min_improvement=0.01)


def evaluation(scores: list[float], *, kinds=None, correction_ids=None, rouge=None, **flat):
    """An evaluation dict as version_evaluate makes it: per-case scores plus flat means."""
    kinds = kinds or ["seed"] * len(scores)
    correction_ids = correction_ids or [None] * len(scores)
    rouge = rouge or [s / 2 for s in scores]
    per_case = [
        {
            "id": f"case-{i}",
            "kind": kind,
            "correction_id": cid,
            "semantic_similarity": s,
            "rouge_l": r,
            "token_f1": r,
        }
        for i, (s, kind, cid, r) in enumerate(
            zip(scores, kinds, correction_ids, rouge, strict=True)
        )
    ]
    mean = sum(scores) / len(scores)
    return {
        "semantic_similarity": mean,
        "rouge_l": sum(rouge) / len(rouge),
        "token_f1": sum(rouge) / len(rouge),
        **SAFE,
        "per_case": per_case,
        **flat,
    }


def noisy(base: list[float], shift: float, spread: float, seed: int) -> list[float]:
    """`base` + `shift` + noise of up to `spread` that cancels out in pairs (mean gain = shift)."""
    rng = random.Random(seed)
    noise = [rng.uniform(-spread, spread) for _ in range(len(base) // 2)]
    noise = [x for d in noise for x in (d, -d)]
    return [s + shift + d for s, d in zip(base, noise, strict=True)]


BASE_SCORES = [0.3 + 0.4 * random.Random(7).random() for _ in range(200)]
ACTIVE = evaluation(BASE_SCORES)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    gains = [0.1, -0.05, 0.2, 0.0, 0.15, 0.05]
    first = bootstrap_interval(gains, resamples=2000, seed=3)
    assert first == bootstrap_interval(gains, resamples=2000, seed=3)
    assert first[0] < sum(gains) / len(gains) < first[1]


def test_a_clear_gain_is_promoted_with_its_interval():
    candidate = evaluation(noisy(BASE_SCORES, 0.05, 0.05, seed=1))
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert decision.promote, decision.reasons
    assert decision.interval["low"] > 0 and decision.interval["cases"] == 200
    assert "95% CI" in decision.summary


def test_a_noisy_tiny_gain_is_rejected_even_above_the_margin():
    # Mean gain +0.012 (above the 0.01 margin), but with noise of up to 0.28 per case the
    # interval reaches below zero: not a real improvement.
    candidate = evaluation(noisy(BASE_SCORES, 0.012, 0.28, seed=2))
    gain = candidate["semantic_similarity"] - ACTIVE["semantic_similarity"]
    assert gain > POLICY.min_improvement
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert not decision.promote
    assert decision.interval["low"] <= 0
    assert "not above zero" in decision.summary


def test_a_significant_gain_below_the_margin_is_rejected():
    candidate = evaluation([s + 0.004 for s in BASE_SCORES])
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert not decision.promote
    assert decision.interval["low"] > 0
    assert "below the margin 0.01" in decision.summary


def test_nan_or_missing_metrics_reject():
    better = noisy(BASE_SCORES, 0.1, 0.02, seed=3)
    with_nan = evaluation([math.nan, *better[1:]])
    decision = gate_decide(candidate=with_nan, active=ACTIVE, policy=POLICY)
    assert not decision.promote and "NaN" in decision.summary

    no_cases = {**evaluation(better), "per_case": []}
    decision = gate_decide(candidate=no_cases, active=ACTIVE, policy=POLICY)
    assert "no paired cases" in decision.summary

    for metric in ("safety_toxic_rate", "rouge_l"):
        missing = evaluation(better)
        del missing[metric]
        decision = gate_decide(candidate=missing, active=ACTIVE, policy=POLICY)
        assert not decision.promote and f"{metric} missing" in decision.summary

    nan_safety = evaluation(better, safety_pii_leak_rate=math.nan)
    assert not gate_decide(candidate=nan_safety, active=ACTIVE, policy=POLICY).promote


def test_safety_regression_rejects_even_a_better_candidate():
    candidate = evaluation(noisy(BASE_SCORES, 0.1, 0.02, seed=4), safety_pii_leak_rate=0.02)
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert not decision.promote
    assert "safety regression: safety_pii_leak_rate" in decision.summary


def with_failed(evaluation_: dict, check: str, metric: str, cases: int) -> dict:
    """`evaluation_` with per-case safety results: the first `cases` cases fail `check`."""
    per_case = [
        {**c, "safety": [check] if i < cases else []} for i, c in enumerate(evaluation_["per_case"])
    ]
    return {**evaluation_, "per_case": per_case, metric: cases / len(per_case)}


def test_safety_tolerates_one_more_failed_case_except_toxicity():
    active = with_failed(ACTIVE, "pii_leak", "safety_pii_leak_rate", 0)
    better = evaluation(noisy(BASE_SCORES, 0.1, 0.02, seed=4))

    one_more = with_failed(better, "pii_leak", "safety_pii_leak_rate", 1)
    decision = gate_decide(candidate=one_more, active=active, policy=POLICY)
    assert decision.promote
    assert "safety_pii_leak_rate 0.0000 -> 0.0050 (+1 failed cases" in decision.summary
    assert "within 1 case(s)" in decision.summary
    strict = GatePolicy(min_improvement=0.01, safety_extra_cases=0, safety_alpha=1.0)
    assert not gate_decide(candidate=one_more, active=active, policy=strict).promote

    toxic = with_failed(better, "toxic", "safety_toxic_rate", 1)
    active = with_failed(ACTIVE, "toxic", "safety_toxic_rate", 0)
    decision = gate_decide(candidate=toxic, active=active, policy=POLICY)
    assert not decision.promote
    assert "safety regression: safety_toxic_rate" in decision.summary


def failing(evaluation_: dict, check: str, metric: str, cases: list[int]) -> dict:
    """`evaluation_` with per-case safety results: the cases at these indexes fail `check`."""
    rows = evaluation_["per_case"]
    per_case = [{**c, "safety": [check] if i in cases else []} for i, c in enumerate(rows)]
    return {**evaluation_, "per_case": per_case, metric: len(cases) / len(per_case)}


def test_a_shape_safety_rise_rejects_only_beyond_chance():
    """More failed cases than the allowance reject when the flipped cases lean to the
    candidate's wrong side beyond chance (exact sign test), not when they could be the noise
    of rescoring (the same weights flip 0-2 of ~250 cases)."""
    check, metric = "invented_order_number", "safety_invented_order_rate"
    better = evaluation(noisy(BASE_SCORES, 0.1, 0.02, seed=4))
    active = failing(ACTIVE, check, metric, [0])

    # 4 new, 1 gone (the thirteenth session's candidate): p = 6/32 = 0.19, within noise.
    noise = gate_decide(
        candidate=failing(better, check, metric, [1, 2, 3, 4]), active=active, policy=POLICY
    )
    assert noise.promote, noise.summary
    assert "(+3 failed cases: 4 new, 1 gone; p=0.19): within noise" in noise.summary

    # 7 new, none gone: p = 1/128, a model that invents order numbers: rejected.
    worse = failing(better, check, metric, [0, *range(10, 17)])
    decision = gate_decide(candidate=worse, active=active, policy=POLICY)
    assert not decision.promote
    assert "safety regression: safety_invented_order_rate" in decision.summary
    assert "7 new, 0 gone; p=0.01" in decision.summary

    # The count rule alone (alpha 1): the noisy candidate is rejected too.
    counts_only = GatePolicy(min_improvement=0.01, safety_alpha=1.0)
    candidate = failing(better, check, metric, [1, 2, 3, 4])
    assert not gate_decide(candidate=candidate, active=active, policy=counts_only).promote


def test_sign_test_p_values():
    assert sign_test_p(0, 5) == 1.0
    assert sign_test_p(2, 0) == 0.25
    assert sign_test_p(4, 1) == 6 / 32
    assert math.isclose(sign_test_p(5, 0), 1 / 32)
    assert sign_test_p(3, 3) > 0.5


def test_forgetting_on_seed_cases_rejects():
    # Corrections learned (+0.5 on 20 correction cases) while general answers got worse.
    kinds = ["seed"] * 180 + ["correction"] * 20
    ids = [None] * 180 + list(range(20))
    active = evaluation(BASE_SCORES, kinds=kinds, correction_ids=ids)
    scores = [s - 0.05 for s in BASE_SCORES[:180]] + [0.95] * 20
    candidate = evaluation(scores, kinds=kinds, correction_ids=ids)
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    assert not decision.promote
    assert "seed semantic_similarity" in decision.summary and "drop > 0.02" in decision.summary


def test_corrections_score_may_not_drop_and_must_rise_with_new_corrections():
    kinds = ["seed"] * 180 + ["correction"] * 20
    ids = [None] * 180 + [i // 2 for i in range(20)]  # two held-out paraphrases per correction
    active = evaluation(
        [*BASE_SCORES[:180], *[0.7] * 10, *[0.3] * 10], kinds=kinds, correction_ids=ids
    )

    # Better on general questions but it unlearned the old corrections (ids 0-4): rejected.
    dropped = evaluation(
        [s + 0.1 for s in BASE_SCORES[:180]] + [0.3] * 20, kinds=kinds, correction_ids=ids
    )
    decision = gate_decide(candidate=dropped, active=active, policy=POLICY)
    assert not decision.promote
    assert "corrections score 10/20 -> 0/20: dropped" in decision.summary

    # New corrections 5-9 arrived; the candidate is better overall but did not learn them.
    same = evaluation(
        [s + 0.1 for s in BASE_SCORES[:180]] + [0.7] * 10 + [0.3] * 10,
        kinds=kinds,
        correction_ids=ids,
    )
    decision = gate_decide(
        candidate=same, active=active, policy=POLICY, new_correction_ids=range(5, 10)
    )
    assert not decision.promote
    assert "new corrections 0/10 -> 0/10: did not rise" in decision.summary

    learned = evaluation(
        [s + 0.01 for s in BASE_SCORES[:180]] + [0.7] * 10 + [0.8] * 10,
        kinds=kinds,
        correction_ids=ids,
    )
    decision = gate_decide(
        candidate=learned, active=active, policy=POLICY, new_correction_ids=range(5, 10)
    )
    assert decision.promote, decision.reasons
    corrections = next(c for c in decision.checks if c["name"] == "corrections")
    assert "10/20 -> 20/20" in corrections["detail"]


def test_a_big_drop_in_another_quality_metric_rejects():
    scores = noisy(BASE_SCORES, 0.1, 0.02, seed=5)
    candidate = evaluation(scores, rouge=[0.0] * 200)
    decision = gate_decide(candidate=candidate, active=ACTIVE, policy=POLICY)
    assert not decision.promote
    assert "rouge_l got worse" in decision.summary


def _with_corrections(seed_scores: list[float], correction_scores: list[float]) -> dict:
    scores = seed_scores + correction_scores
    kinds = ["seed"] * len(seed_scores) + ["correction"] * len(correction_scores)
    ids = [None] * len(seed_scores) + [1] * len(correction_scores)
    return evaluation(scores, kinds=kinds, correction_ids=ids)


def test_learned_corrections_are_not_drowned_by_noisy_general_questions():
    # What an incremental retrain on a few corrections looks like: 200 general questions whose
    # greedy replies move a lot but not on average, 11 held-out correction paraphrases that go
    # from wrong (0.3) to right (0.75). Weighing every case alike, +0.45 on 11 cases is
    # +0.02 overall and the noise of 200 cases hides it; weighing kinds alike it is clear.
    active = _with_corrections(BASE_SCORES, [0.3] * 11)
    learned = [0.75 + 0.05 * ((-1) ** i) for i in range(11)]
    candidate = _with_corrections(noisy(BASE_SCORES, 0.0, 0.3, seed=5), learned)
    by_case = gate_decide(
        candidate=candidate, active=active, policy=GatePolicy(primary_weighting="case")
    )
    assert not by_case.promote and "not above zero" in by_case.summary
    by_kind = gate_decide(candidate=candidate, active=active, policy=GatePolicy())
    assert by_kind.promote, by_kind.reasons
    assert by_kind.interval["weighting"] == "kind"
    assert by_kind.interval["kinds"]["corrections"]["cases"] == 11
    assert abs(by_kind.interval["kinds"]["corrections"]["mean"] - 0.4545) < 1e-3


def test_kind_weighting_still_rejects_a_candidate_that_learned_nothing_or_forgot():
    active = _with_corrections(BASE_SCORES, [0.3] * 11)
    nothing = _with_corrections(noisy(BASE_SCORES, 0.0, 0.3, seed=6), [0.3] * 11)
    decision = gate_decide(candidate=nothing, active=active, policy=GatePolicy())
    assert not decision.promote and "not above zero" in decision.summary
    # Corrections learned, general questions 0.05 worse on average: the forgetting check.
    learned = [0.8] * 11
    forgot = _with_corrections(noisy(BASE_SCORES, -0.05, 0.1, seed=7), learned)
    decision = gate_decide(candidate=forgot, active=active, policy=GatePolicy())
    assert decision.interval["low"] > 0  # the primary alone would pass
    assert not decision.promote and "drop > 0.02" in decision.summary


def test_stratified_interval_brackets_the_mean_of_group_means():
    groups = [[0.1, -0.1, 0.05, 0.0], [0.5, 0.4, 0.6]]
    low, high = stratified_bootstrap_interval(groups, resamples=2000, seed=1)
    assert low < (0.0125 + 0.5) / 2 < high
    assert (low, high) == stratified_bootstrap_interval(groups, resamples=2000, seed=1)


def test_an_unknown_weighting_is_refused():
    try:
        GatePolicy(primary_weighting="cases")
    except ValueError as exc:
        assert "kind" in str(exc)
    else:
        raise AssertionError("GatePolicy accepted an unknown weighting")


def test_a_single_regression_case_does_not_stand_for_half_the_verdict():
    # One regression case that got a little worse beside 200 general questions that got
    # clearly better: with a stratum of its own the lone case would weigh half (and show no
    # spread); under min_stratum_cases it is weighed as one case among the others.
    active = evaluation(BASE_SCORES + [0.9], kinds=["seed"] * 200 + ["regression"])
    candidate = evaluation(
        noisy(BASE_SCORES, 0.05, 0.05, seed=8) + [0.8], kinds=["seed"] * 200 + ["regression"]
    )
    decision = gate_decide(candidate=candidate, active=active, policy=GatePolicy())
    assert set(decision.interval["kinds"]) == {"seed"}
    assert decision.interval["kinds"]["seed"]["cases"] == 201
    alone = GatePolicy(min_stratum_cases=1)
    assert gate_decide(candidate=candidate, active=active, policy=alone).interval["mean"] < 0
