"""engine/rules.py: the kind alone names a rule's three-valued answer."""

from __future__ import annotations

import itertools
from typing import Any

from fhir_cohort.criteria.models import Trial
from fhir_cohort.engine.rules import WORDS

FLIP = {"inclusion": "exclusion", "exclusion": "inclusion"}


def _flipped(trial: Trial) -> Trial:
    """The same rules with every criterion's kind swapped (a mislabelled file)."""
    crits = [c.model_copy(update={"kind": FLIP[c.kind]}) for c in trial.criteria]
    return trial.model_copy(update={"criteria": crits})


def _sweep(b: Any) -> dict[str, list[tuple]]:
    """Patients that between them give every answer of every shipped criterion."""
    conditions: list[tuple] = []
    medications: list[tuple] = []
    observations: list[tuple] = []
    patients: list[tuple] = []
    codes = [b.SLE, b.LUPUS_UNSPECIFIED, b.DISCOID, b.LN, b.LN_CLASS_IV, b.CNS_LUPUS, b.SEIZURE]
    codes += [b.HEADACHE, b.PREGNANCY, b.LACTATION, b.DELIVERY, b.HEART_FAILURE]
    states = [
        {},
        {"verification": "provisional"},
        {"clinical": "resolved", "abatement": "2020-01-01"},
        {"clinical": None, "has_abatement": True},
        {"onset": "2025"},
        {"onset": "2025-05-01"},
    ]
    births = ["1980-01-01", "2007", "2010-01-01", None]
    genders = ["female", "male", None]
    for i, ((code, state), birth, gender) in enumerate(
        zip(
            itertools.product(codes, states),
            itertools.cycle(births),
            itertools.cycle(genders),
            strict=False,
        )
    ):
        pid = f"p{i}"
        patients.append(b.pat(pid, birth=birth, gender=gender))
        conditions.append(b.cond(code, pid, **state))
        if i % 3 == 0:
            conditions.append(b.cond(b.SLE, pid))
        if i % 4 == 0:
            medications += [
                b.med(b.PREDNISONE, "2024-01-01", "2024-06-30", pid),
                b.med(b.METHOTREXATE, "2023-09-01", "2024-03-01", pid),
                b.med(b.MMF, "2024-04-01", None if i % 8 else "2025-01-01", pid),
            ]
        interp = ("POS", "NEG", None)[i % 3]
        if interp:
            observations.append(
                b.obs(b.ANTI_DSDNA, "2025-03-01", pid, interpretation=(f"{b.V3}|{interp}",))
            )
    patients.append(b.pat("dead", deceased=True, deceased_date=b.d("2025-01-01")))
    return {
        "patients": patients,
        "conditions": conditions,
        "medications": medications,
        "observations": observations,
    }


def test_a_mislabelled_kind_cannot_invert_answers(run, b, trial):
    """Every shipped criterion with its kind swapped answers the same three values in the
    other kind's words: met <-> excluded, not_met <-> clear, unknown <-> review."""
    rows = _sweep(b)
    res = run(**rows)
    flipped = run(trial=_flipped(trial), **rows)
    key = ["patient_id", "criterion_id"]
    both = res.answers.merge(flipped.answers, on=key, suffixes=("", "_flipped"))
    assert len(both) == len(res.answers) == len(rows["patients"]) * len(trial.criteria)
    kinds = {c.id: c.kind for c in trial.criteria}
    for row in both.itertuples():
        kind = kinds[row.criterion_id]
        value = {w: v for v, w in WORDS[kind].items()}[row.answer]
        assert row.answer_flipped == WORDS[FLIP[kind]][value], row
    # The sweep reaches every value of every criterion (E4 only ever asks for review).
    seen = both.groupby("criterion_id").answer.agg(set).to_dict()
    want = {c: set(WORDS[k].values()) for c, k in kinds.items()}
    want["chronic_illness"] -= {"excluded"}
    assert seen == want
    # And the status follows the flipped words (an excluded patient is not eligible).
    assert set(flipped.status.status) <= {"eligible", "review", "ineligible"}


def test_words_are_a_bijection_per_kind():
    for kind, words in WORDS.items():
        assert set(words) == {True, False, None}, kind
        assert len(set(words.values())) == 3, kind
    assert set(WORDS["inclusion"].values()).isdisjoint(WORDS["exclusion"].values())
