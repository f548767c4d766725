"""The notebook plots: what each draws (bars, labels, lines), on the Agg backend, no images."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import matplotlib
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle

from fhir_cohort import plots, screen
from fhir_cohort.engine.medication import window_start
from tests.conftest import DEMO_AS_OF

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    return screen(as_of=DEMO_AS_OF)


def _bars(ax: matplotlib.axes.Axes) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# --------------------------------------------------------------------------- attrition_funnel


def test_funnel_has_one_bar_per_step_with_remaining_as_width(demo) -> None:  # type: ignore[no-untyped-def]
    ax = plots.attrition_funnel(demo.attrition)
    bars = _bars(ax)
    assert len(bars) == len(demo.attrition)
    by_y = sorted(bars, key=lambda b: b.get_y())
    assert [round(b.get_width()) for b in by_y] == list(demo.attrition["remaining"])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == list(demo.attrition["criterion_id"])
    # Step 0 is on top: the y axis is inverted.
    assert ax.yaxis_inverted()
    # The counts are written on the bars.
    written = {t.get_text() for t in ax.texts}
    assert {str(n) for n in demo.attrition["remaining"]} <= written
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"inclusion", "exclusion"}


def test_funnel_orders_by_step_not_by_row() -> None:
    table = pd.DataFrame(
        {
            "step": [2, 0, 1],
            "criterion_id": ["c", "all", "b"],
            "kind": ["exclusion", "", "inclusion"],
            "remaining": [3, 9, 5],
        }
    )
    ax = plots.attrition_funnel(table)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["all", "b", "c"]
    colors = {b.get_width(): b.get_facecolor() for b in _bars(ax)}
    assert colors[5] != colors[3]  # inclusion and exclusion differ


def test_funnel_draws_on_given_axes() -> None:
    fig, ax = plt.subplots()
    table = pd.DataFrame({"step": [0], "criterion_id": ["all"], "kind": [""], "remaining": [4]})
    assert plots.attrition_funnel(table, ax=ax) is ax
    assert len(fig.axes) == 1


# --------------------------------------------------------------------------- era_swimlane


def _eras(*rows: tuple[str, str, str, str, int]) -> pd.DataFrame:
    return pd.DataFrame.from_records(
        [("p1", req, agent, start, end, days) for req, agent, start, end, days in rows],
        columns=["patient_id", "requirement", "agent", "start", "end", "days"],
    )


def _era_collections(ax: matplotlib.axes.Axes) -> list[PolyCollection]:
    return [c for c in ax.collections if str(c.get_label()).startswith("era:")]


def _threshold_lines(ax: matplotlib.axes.Axes) -> list[matplotlib.lines.Line2D]:
    return [ln for ln in ax.lines if str(ln.get_label()).startswith("threshold:")]


def _date(x: float) -> dt.date:
    return mdates.num2date(x).date()


def test_swimlane_one_lane_per_agent_and_threshold_84_days_after_start() -> None:
    as_of = dt.date(2026, 11, 24)
    eras = _eras(
        ("glucocorticoids", "glucocorticoids", "2026-01-28", "2026-04-21", 84),
        ("other immunosuppressants", "azathioprine", "2026-01-28", "2026-02-27", 31),
        ("other immunosuppressants", "azathioprine", "2026-05-01", "2026-09-30", 153),
    )
    ax = plots.era_swimlane(eras, "p1", as_of)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["glucocorticoids", "azathioprine"]
    assert len(_era_collections(ax)) == 3
    ticks = sorted(_date(ln.get_xdata()[0]) for ln in _threshold_lines(ax))
    assert ticks == [dt.date(2026, 4, 22), dt.date(2026, 4, 22), dt.date(2026, 7, 24)]
    # An era of exactly 84 days ends (end of its last day) on its threshold tick.
    gluco = next(c for c in _era_collections(ax) if c.get_label() == "era:glucocorticoids")
    xs = gluco.get_paths()[0].vertices[:, 0]
    assert _date(xs.max()) == dt.date(2026, 4, 22) == dt.date(2026, 1, 28) + dt.timedelta(84)
    # The 31-day era is hatched (too short), the others solid.
    hatched = [c.get_label() for c in _era_collections(ax) if c.get_hatch()]
    assert hatched == ["era:azathioprine"]


def test_swimlane_marks_window_and_as_of() -> None:
    as_of = dt.date(2026, 11, 24)
    ax = plots.era_swimlane(_eras(("g", "g", "2025-01-01", "2025-12-31", 365)), "p1", as_of)
    lines = {ln.get_label(): _date(ln.get_xdata()[0]) for ln in ax.lines}
    assert lines["as of"] == as_of
    assert lines["window start"] == dt.date(2024, 11, 24) == window_start(as_of, 24)
    lo, hi = ax.get_xlim()
    assert _date(lo) < dt.date(2024, 11, 24) and _date(hi) > as_of


def test_swimlane_clips_eras_to_the_window() -> None:
    as_of = dt.date(2026, 11, 24)
    ax = plots.era_swimlane(
        _eras(("g", "g", "2023-01-01", "2025-02-01", 70)),
        "p1",
        as_of,
        window_months=24,
        min_days=84,
    )
    xs = _era_collections(ax)[0].get_paths()[0].vertices[:, 0]
    assert _date(xs.min()) == dt.date(2024, 11, 24)
    (tick,) = _threshold_lines(ax)
    assert _date(tick.get_xdata()[0]) == dt.date(2024, 11, 24) + dt.timedelta(84)


def test_swimlane_of_a_patient_without_eras_is_empty_not_an_error() -> None:
    ax = plots.era_swimlane(
        _eras(("g", "g", "2026-01-01", "2026-05-01", 121)), "other", dt.date(2026, 11, 24)
    )
    assert _era_collections(ax) == [] and list(ax.get_yticklabels()) == []


@settings(max_examples=25, deadline=None)
@given(
    start=st.dates(dt.date(2024, 1, 1), dt.date(2026, 11, 1)),
    length=st.integers(0, 400),
    min_days=st.integers(1, 200),
)
def test_swimlane_threshold_is_min_days_after_the_clipped_start(
    start: dt.date, length: int, min_days: int
) -> None:
    as_of = dt.date(2026, 11, 24)
    end = min(start + dt.timedelta(length), as_of)
    eras = _eras(("g", "g", start.isoformat(), end.isoformat(), length + 1))
    ax = plots.era_swimlane(eras, "p1", as_of, min_days=min_days)
    ticks = [_date(ln.get_xdata()[0]) for ln in _threshold_lines(ax)]
    w_start = window_start(as_of, 24)
    if end < w_start:
        assert ticks == []
    else:
        assert ticks == [max(start, w_start) + dt.timedelta(min_days)]
    plt.close("all")


def test_swimlane_of_a_demo_patient(demo) -> None:  # type: ignore[no-untyped-def]
    pid = "s-eligible-exactly-84-days"
    ax = plots.era_swimlane(demo.eras, pid, DEMO_AS_OF)
    agents = list(dict.fromkeys(demo.eras.loc[demo.eras["patient_id"] == pid, "agent"]))
    assert [t.get_text() for t in ax.get_yticklabels()] == agents
    assert len(_threshold_lines(ax)) == (demo.eras["patient_id"] == pid).sum()


# --------------------------------------------------------------------------- answers_heatmap


def test_heatmap_cells_follow_the_answers(demo) -> None:  # type: ignore[no-untyped-def]
    cand = demo.candidates()
    ids = list(demo.criterion_ids)
    ax = plots.answers_heatmap(cand, ids)
    (image,) = ax.images
    grid = image.get_array()
    assert grid.shape == (len(cand), len(ids))
    answers = list(plots.ANSWER_COLORS)
    for r in (0, len(cand) - 1):
        for c, cid in enumerate(ids):
            assert answers[int(grid[r, c])] == cand.iloc[r][cid]
    assert [t.get_text() for t in ax.get_xticklabels()] == ids
    assert [t.get_text() for t in ax.get_yticklabels()] == list(cand["patient_id"])
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {str(v) for cid in ids for v in cand[cid]}


def test_heatmap_without_row_labels_and_unknown_answer() -> None:
    table = pd.DataFrame({"patient_id": ["a", "b"], "x": ["met", "surprise"]})
    ax = plots.answers_heatmap(table, ["x"], row_labels=False)
    assert list(ax.get_yticklabels()) == []
    grid = ax.images[0].get_array()
    assert int(grid[1, 0]) == len(plots.ANSWER_COLORS)  # drawn in the "other" colour


# --------------------------------------------------------------------------- review_queue


def test_review_queue_lists_every_open_point_of_review_patients(demo) -> None:  # type: ignore[no-untyped-def]
    queue = plots.review_queue(demo.patients, demo.criterion_ids)
    review = demo.patients[demo.patients["status"] == "review"]
    assert set(queue["patient_id"]) == set(review["patient_id"])
    for rec in queue.itertuples(index=False):
        row = review[review["patient_id"] == rec.patient_id].iloc[0]
        assert row[rec.criterion_id] == rec.answer in ("unknown", "review")
        assert rec.reason and not rec.reason.startswith(f"{rec.answer}: ")
    multi = queue[queue["patient_id"] == "s-review-multiple-unknowns"]
    assert len(multi["criterion_id"].unique()) > 1


def test_review_queue_falls_back_to_the_answer_without_a_reason() -> None:
    table = pd.DataFrame(
        {
            "patient_id": ["a"],
            "status": ["review"],
            "x": ["unknown"],
            "y": ["clear"],
            "reasons": [""],
        }
    )
    assert plots.review_queue(table, ["x", "y"]).to_dict("records") == [
        {"patient_id": "a", "criterion_id": "x", "answer": "unknown", "reason": "unknown"}
    ]


# --------------------------------------------------------------------------- recruitment over time

# Four weekly runs of one trial: who is a candidate when (absent: not in the source).
WEEKS = {
    "2026-11-03": {"a": "eligible", "b": "review", "c": "ineligible", "d": "ineligible"},
    "2026-11-10": {"a": "eligible", "b": "ineligible", "c": "review", "d": "ineligible"},
    "2026-11-17": {"a": "review", "b": "eligible", "c": "review"},
    "2026-11-24": {"a": "eligible", "c": "ineligible", "d": "eligible", "e": "review"},
}


@pytest.fixture
def weekly(tmp_path):  # type: ignore[no-untyped-def]
    from fhir_cohort.history import open_history
    from tests.history.conftest import record

    with open_history(tmp_path / "h.sqlite") as history:
        for as_of, patients in WEEKS.items():
            record(history, as_of, patients=patients)
        record(history, "2026-11-24", trial_id="OTHER", patients={"z": "eligible"})
        yield history


def test_timeline_counts_every_run_against_all_earlier_ones(weekly) -> None:  # type: ignore[no-untyped-def]
    table = plots.candidate_timeline(weekly, "T-1")
    assert list(table["as_of"]) == [dt.date.fromisoformat(d) for d in WEEKS]
    # recomputed from WEEKS by set arithmetic, run by run
    seen: set[str] = set()
    before: set[str] = set()
    for row, statuses in zip(table.to_dict("records"), WEEKS.values(), strict=True):
        now = {p for p, s in statuses.items() if s != "ineligible"}
        assert row["candidates"] == len(now) == row["eligible"] + row["review"]
        assert row["new_candidates"] == len(now - seen)  # b is back, not new
        assert row["left"] == len(before - now)
        seen, before = seen | now, now
    assert list(table["new_candidates"]) == [2, 1, 0, 2]
    assert plots.candidate_timeline(weekly, "OTHER")["candidates"].tolist() == [1]


def test_first_seen_is_the_first_run_as_candidate_and_the_latest_status(weekly) -> None:  # type: ignore[no-untyped-def]
    first = plots.first_seen(weekly, "T-1").set_index("patient_id")
    assert first["first_seen"].map(dt.date.isoformat).to_dict() == {
        "a": "2026-11-03",
        "b": "2026-11-03",
        "c": "2026-11-10",
        "d": "2026-11-24",
        "e": "2026-11-24",
    }
    assert first["status"].to_dict() == {
        "a": "eligible",
        "b": "not in source",
        "c": "ineligible",
        "d": "eligible",
        "e": "review",
    }


def test_new_candidates_per_week_draws_a_bar_per_run(weekly) -> None:  # type: ignore[no-untyped-def]
    table = plots.candidate_timeline(weekly, "T-1")
    ax = plots.new_candidates_per_week(table.iloc[::-1])  # drawn in date order whatever given
    assert [b.get_height() for b in _bars(ax)] == [2, 1, 0, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(WEEKS)
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == list(table["candidates"])


def test_time_to_decision_stacks_decided_and_waiting_by_week(weekly) -> None:  # type: ignore[no-untyped-def]
    first = plots.first_seen(weekly, "T-1")
    decisions = pd.DataFrame(
        {
            "patient_id": ["a", "c", "x"],
            "decided_at": ["2026-11-20T10:00:00+00:00", None, "2026-11-01"],
        }
    )
    delays = plots.decision_delays(first, decisions, dt.date(2026, 11, 24))
    got = delays.set_index("patient_id")[["decided", "days"]].to_dict("index")
    assert got == {
        "a": {"decided": True, "days": 17},
        "b": {"decided": False, "days": 21},
        "c": {"decided": False, "days": 14},
        "d": {"decided": False, "days": 0},
        "e": {"decided": False, "days": 0},
    }
    ax = plots.time_to_decision(delays)
    heights = [b.get_height() for b in _bars(ax)]
    n = len(heights) // 2
    assert heights[:n] == [0, 0, 1, 0] and heights[n:] == [2, 0, 1, 1]  # decided, waiting
    assert "no decisions" not in ax.get_title()
    undecided = plots.decision_delays(first, None, dt.date(2026, 11, 24))
    assert not undecided["decided"].any()
    assert "no decisions recorded" in plots.time_to_decision(undecided).get_title()
    assert "no decisions recorded" in plots.time_to_decision(undecided.iloc[:0]).get_title()
