"""Plots (and the small tables behind them) for the analyst notebooks in ``notebooks/``.

matplotlib is imported inside each function, so importing this module (and the package) does not
need it. Every function draws on ``ax`` when given, else on a new figure, and returns the Axes;
none calls ``plt.show()``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from fhir_cohort.engine.medication import window_start

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "ANSWER_COLORS",
    "answers_heatmap",
    "attrition_funnel",
    "candidate_timeline",
    "decision_delays",
    "era_swimlane",
    "first_seen",
    "new_candidates_per_week",
    "review_queue",
    "time_to_decision",
]

# One colour per answer: passing answers green, failing red, open (needs a human) amber.
ANSWER_COLORS: dict[str, str] = {
    "met": "#2e7d32",
    "clear": "#81c784",
    "not_met": "#c62828",
    "excluded": "#ef9a9a",
    "unknown": "#f9a825",
    "review": "#ffe082",
}
OPEN_ANSWERS = ("unknown", "review")
_KIND_COLORS = {"inclusion": "#1565c0", "exclusion": "#6a1b9a"}
_OTHER_COLOR = "#9e9e9e"


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=size, layout="constrained")
    return new


def attrition_funnel(attrition: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Horizontal bars of ``remaining`` per attrition step, the first step on top.

    Bars are labelled with the criterion id and coloured by kind (inclusion / exclusion); the
    count is written at the end of each bar.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> table = pd.DataFrame({"step": [0, 1], "criterion_id": ["all", "age"],
    ...                       "kind": ["", "inclusion"], "remaining": [10, 7]})
    >>> ax = attrition_funnel(table)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['all', 'age']
    """
    table = attrition.sort_values("step", kind="stable").reset_index(drop=True)
    ax = _axes(ax, (8, 0.45 * len(table) + 1.2))
    positions = list(range(len(table)))
    colors = [_KIND_COLORS.get(str(k), _OTHER_COLOR) for k in table.get("kind", [""] * len(table))]
    bars = ax.barh(positions, table["remaining"], color=colors)
    ax.bar_label(bars, labels=[str(int(n)) for n in table["remaining"]], padding=3)
    ax.set_yticks(positions, labels=[str(c) for c in table["criterion_id"]])
    ax.invert_yaxis()  # step 0 at the top, as a funnel reads
    ax.set_xlabel("patients remaining")
    ax.set_title("Attrition")
    ax.margins(x=0.12)
    from matplotlib.patches import Patch

    shown = [k for k in _KIND_COLORS if k in set(map(str, table.get("kind", [])))]
    if shown:
        ax.legend(
            handles=[Patch(color=_KIND_COLORS[k], label=k) for k in shown],
            loc="lower right",
            frameon=False,
        )
    return ax


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def era_swimlane(
    eras: pd.DataFrame,
    patient_id: str,
    as_of: dt.date,
    window_months: int = 24,
    min_days: int = 84,
    ax: Axes | None = None,
) -> Axes:
    """One lane per agent of ``patient_id``: its medication eras over the screening window.

    The window ``[as_of - window_months, as_of]`` is the white band (outside is shaded); eras are
    clipped to it, as the criterion counts them. A dashed tick on each era marks where it reaches
    ``min_days`` (12 weeks): an era that gets past its tick counts. Eras of at least ``min_days``
    days in the window are solid, shorter ones hatched.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> eras = pd.DataFrame({"patient_id": ["p"], "requirement": ["glucocorticoids"],
    ...     "agent": ["prednisone"], "start": ["2026-01-01"], "end": ["2026-06-30"],
    ...     "days": [181]})
    >>> ax = era_swimlane(eras, "p", dt.date(2026, 11, 24))
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['prednisone']
    """
    import matplotlib.dates as mdates

    w_start = window_start(as_of, window_months)
    mine = eras[eras["patient_id"] == patient_id]
    # Lanes grouped by requirement (glucocorticoids first, as the criterion lists them).
    lanes = list(dict.fromkeys(zip(mine["requirement"], mine["agent"], strict=True)))
    ax = _axes(ax, (9, 0.55 * max(len(lanes), 1) + 1.6))
    one_day = dt.timedelta(days=1)
    for lane, (requirement, agent) in enumerate(lanes):
        rows = mine[(mine["requirement"] == requirement) & (mine["agent"] == agent)]
        for rec in rows.itertuples(index=False):
            start = max(_as_date(rec.start), w_start)
            end = min(_as_date(rec.end), as_of)
            if end < start:
                continue
            long_enough = int(rec.days) >= min_days
            color = "#1565c0" if requirement == lanes[0][0] else "#00897b"
            # An era's end day counts, so the bar runs to the end of that day.
            x0 = mdates.date2num(start)
            ax.broken_barh(
                [(x0, mdates.date2num(end + one_day) - x0)],
                (lane - 0.35, 0.7),
                facecolors=color if long_enough else "white",
                edgecolors=color,
                hatch=None if long_enough else "///",
                label=f"era:{agent}",
            )
            tick = mdates.date2num(start + dt.timedelta(days=min_days))
            ax.plot(
                [tick, tick],
                [lane - 0.45, lane + 0.45],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"threshold:{agent}",
            )
    ax.axvspan(
        mdates.date2num(w_start - dt.timedelta(days=60)),
        mdates.date2num(w_start),
        color="0.92",
        zorder=0,
    )
    ax.axvline(mdates.date2num(w_start), color="0.4", linewidth=1, label="window start")
    ax.axvline(mdates.date2num(as_of), color="black", linewidth=1.5, label="as of")
    ax.set_xlim(
        mdates.date2num(w_start - dt.timedelta(days=30)),
        mdates.date2num(as_of + dt.timedelta(days=30)),
    )
    ax.set_yticks(range(len(lanes)), labels=[agent for _, agent in lanes])
    ax.set_ylim(len(lanes) - 0.5 if lanes else 0.5, -0.5)
    ax.xaxis.set_major_locator(mdates.MonthLocator(bymonth=(1, 4, 7, 10)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(facecolor="0.5", edgecolor="0.5", label=f">= {min_days} days in window"),
            Patch(
                facecolor="white",
                edgecolor="0.5",
                hatch="///",
                label=f"< {min_days} days in window",
            ),
            Line2D(
                [],
                [],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"{min_days} days from era start",
            ),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncols=3,
        frameon=False,
    )
    ax.set_title(f"{patient_id}: medication eras, {window_months}-month window")
    return ax


def answers_heatmap(
    patients: pd.DataFrame,
    criterion_ids: Sequence[str],
    ax: Axes | None = None,
    row_labels: bool = True,
) -> Axes:
    """One row per patient, one column per criterion, each cell coloured by its answer.

    Rows keep the order of ``patients`` (e.g. ``result.candidates()``: eligible first). Answers
    outside :data:`ANSWER_COLORS` are drawn light grey. With ``row_labels=False`` the FHIR ids
    are left off (for slides).

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> table = pd.DataFrame({"patient_id": ["a", "b"], "age": ["met", "unknown"]})
    >>> ax = answers_heatmap(table, ["age"])
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['age']
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ids = list(criterion_ids)
    answers = list(ANSWER_COLORS)
    codes = {a: i for i, a in enumerate(answers)}
    other = len(answers)
    grid = [[codes.get(str(v), other) for v in patients[cid]] for cid in ids]
    cmap = ListedColormap([*ANSWER_COLORS.values(), "#eeeeee"])
    ax = _axes(ax, (1.1 * len(ids) + 3, 0.22 * len(patients) + 1.8))
    # Transpose: rows are patients.
    ax.imshow(
        list(map(list, zip(*grid, strict=True))) if ids else [[]],
        cmap=cmap,
        vmin=0,
        vmax=other,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(range(len(ids)), labels=ids, rotation=45, ha="right")
    if row_labels:
        ax.set_yticks(range(len(patients)), labels=list(patients["patient_id"]), fontsize=7)
    else:
        ax.set_yticks([])
    present = {str(v) for cid in ids for v in patients[cid]}
    ax.legend(
        handles=[Patch(color=c, label=a) for a, c in ANSWER_COLORS.items() if a in present],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    ax.set_title("Answers per criterion")
    return ax


def review_queue(patients: pd.DataFrame, criterion_ids: Sequence[str]) -> pd.DataFrame:
    """One row per open point of each review patient: patient_id, criterion_id, answer, reason.

    An open point is a criterion answered ``unknown`` (inclusion) or ``review`` (exclusion);
    its reason is that criterion's part of the patient's ``reasons`` cell (the answer itself when
    the cell says nothing about it). A patient with several open points has several rows.

    >>> table = pd.DataFrame({"patient_id": ["a", "b"], "status": ["review", "eligible"],
    ...     "age": ["unknown", "met"], "cns": ["review", "clear"],
    ...     "reasons": ["age: unknown: birth date missing; cns: review: headache", ""]})
    >>> review_queue(table, ["age", "cns"]).to_dict("records")[0]
    {'patient_id': 'a', 'criterion_id': 'age', 'answer': 'unknown', 'reason': 'birth date missing'}
    """
    # The report owns the reasons format; reuse its parser rather than a second one.
    from fhir_cohort.report.html import split_reasons

    ids = list(criterion_ids)
    rows: list[tuple[str, str, str, str]] = []
    review = patients[patients["status"] == "review"]
    for rec in review.to_dict("records"):
        reasons = rec.get("reasons")
        parts = split_reasons(reasons if isinstance(reasons, str) else "", ids)
        for cid in ids:
            answer = str(rec.get(cid, ""))
            if answer not in OPEN_ANSWERS:
                continue
            for text in parts.get(cid) or [answer]:
                rows.append((str(rec["patient_id"]), cid, answer, text.removeprefix(f"{answer}: ")))
    return pd.DataFrame.from_records(
        rows, columns=["patient_id", "criterion_id", "answer", "reason"]
    )


# --------------------------------------------------------------------------------------------
# Recruitment over time (notebooks/04_recruitment_over_time.ipynb): read from the screening
# history (fhir_cohort/history), so a site can plot its own weekly runs.

_CANDIDATE = ("eligible", "review")
DECIDED_COLOR = "#2e7d32"
WAITING_COLOR = "#f9a825"


def _runs_with_statuses(history: Any, trial_id: str) -> list[tuple[Any, dict[str, str]]]:
    return [(run, history.statuses(run.run_id)) for run in history.runs(trial_id)]


def candidate_timeline(history: Any, trial_id: str) -> pd.DataFrame:
    """One row per run of ``trial_id`` in ``history``, oldest first: ``run_id, as_of`` (a
    date), ``eligible, review, candidates``, ``new_candidates`` (a candidate for the first time
    in this history: every candidate of the first run) and ``left`` (candidates of the run
    before who are not candidates now: ineligible, or no longer in the source).

    >>> RUNS = [{"a": "eligible", "b": "ineligible"}, {"a": "review", "b": "eligible"}]
    >>> class H:  # the two History methods read
    ...     def runs(self, trial_id):
    ...         return [type("R", (), {"run_id": i, "as_of": d})()
    ...                 for i, d in ((1, "2026-11-17"), (2, "2026-11-24"))]
    ...     def statuses(self, run_id):
    ...         return RUNS[run_id - 1]
    >>> candidate_timeline(H(), "T")[["candidates", "new_candidates", "left"]].values.tolist()
    [[1, 1, 0], [2, 1, 0]]
    """
    rows = []
    seen: set[str] = set()
    before: set[str] = set()
    for run, statuses in _runs_with_statuses(history, trial_id):
        now = {p for p, s in statuses.items() if s in _CANDIDATE}
        values = list(statuses.values())
        rows.append(
            {
                "run_id": run.run_id,
                "as_of": _as_date(run.as_of),
                "eligible": values.count("eligible"),
                "review": values.count("review"),
                "candidates": len(now),
                "new_candidates": len(now - seen),
                "left": len(before - now),
            }
        )
        seen |= now
        before = now
    columns = ["run_id", "as_of", "eligible", "review", "candidates", "new_candidates", "left"]
    return pd.DataFrame(rows, columns=columns)


def first_seen(history: Any, trial_id: str) -> pd.DataFrame:
    """Every patient who was ever a candidate of ``trial_id``: ``patient_id, first_seen``
    (the as-of date of the first run that made them one) and ``status`` in the latest run
    (``not in source`` when the latest run did not screen them)."""
    first: dict[str, dt.date] = {}
    latest: dict[str, str] = {}
    for run, statuses in _runs_with_statuses(history, trial_id):
        for pid, status in statuses.items():
            if status in _CANDIDATE:
                first.setdefault(pid, _as_date(run.as_of))
        latest = statuses
    rows = [(p, d, latest.get(p, "not in source")) for p, d in sorted(first.items())]
    return pd.DataFrame(rows, columns=["patient_id", "first_seen", "status"])


def new_candidates_per_week(timeline: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Bars: new candidates per run (the table of :func:`candidate_timeline`), the count on
    each bar; a line: all candidates of that run. One bar per as-of date, in date order."""
    ax = _axes(ax, (7, 3.5))
    table = timeline.sort_values("as_of")
    labels = [d.isoformat() for d in table["as_of"]]
    xs = list(range(len(table)))
    bars = ax.bar(xs, table["new_candidates"], color="#1565c0", label="new candidates")
    ax.bar_label(bars, padding=2)
    ax.plot(xs, table["candidates"], color="#6a1b9a", marker="o", label="all candidates")
    ax.set_xticks(xs, labels)
    ax.set_xlabel("screening as of")
    ax.set_ylabel("patients")
    ax.set_title("New candidates per weekly screening")
    # headroom for the legend above the tallest bar or point
    top = max([*table["new_candidates"], *table["candidates"], 1])
    ax.set_ylim(0, top * 1.35)
    ax.legend(loc="upper right", ncol=2, frameon=False)
    return ax


def decision_delays(
    first: pd.DataFrame, decisions: pd.DataFrame | None, as_of: dt.date
) -> pd.DataFrame:
    """Per patient ever a candidate (:func:`first_seen`): ``patient_id, first_seen,
    decided_at`` (None: undecided), ``decided`` and ``days``: from first seen to the decision,
    or to ``as_of`` while undecided (a decision recorded before the run that first listed the
    patient counts 0 days). ``decisions``: ``patient_id, decided_at`` (date or ISO text).

    >>> first = pd.DataFrame({"patient_id": ["a", "b"], "status": ["eligible"] * 2,
    ...     "first_seen": [dt.date(2026, 11, 3), dt.date(2026, 11, 10)]})
    >>> made = pd.DataFrame({"patient_id": ["a"], "decided_at": ["2026-11-13T09:30:00+00:00"]})
    >>> decision_delays(first, made, dt.date(2026, 11, 24))[["decided", "days"]].values.tolist()
    [[True, 10], [False, 14]]
    """
    when: dict[str, dt.date] = {}
    if decisions is not None:
        made = decisions.dropna(subset=["decided_at"])
        for pid, at in zip(made["patient_id"], made["decided_at"], strict=True):
            when[str(pid)] = _as_date(at)
    rows = []
    for pid, seen in zip(first["patient_id"], first["first_seen"], strict=True):
        decided = when.get(pid)
        end = decided or as_of
        rows.append((pid, seen, decided, decided is not None, max(0, (end - seen).days)))
    columns = ["patient_id", "first_seen", "decided_at", "decided", "days"]
    return pd.DataFrame(rows, columns=columns)


def time_to_decision(delays: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Patients per week since first seen as a candidate (:func:`decision_delays`), stacked:
    decided (weeks to the decision) and still waiting (weeks so far). With no decision in the
    table the title says so: the plot then shows only how long candidates have waited."""
    ax = _axes(ax, (7, 3.5))
    weeks = delays["days"] // 7 if len(delays) else pd.Series(dtype="int64")
    n = int(weeks.max()) + 1 if len(weeks) else 1
    xs = list(range(n))
    decided = [int(((weeks == w) & delays["decided"]).sum()) for w in xs]
    waiting = [int(((weeks == w) & ~delays["decided"].astype(bool)).sum()) for w in xs]
    ax.bar(xs, decided, color=DECIDED_COLOR, label="decided")
    ax.bar(xs, waiting, bottom=decided, color=WAITING_COLOR, label="no decision yet")
    ax.set_xticks(xs, [f"{w}" for w in xs])
    ax.set_xlabel("weeks since first seen as a candidate")
    ax.set_ylabel("patients")
    title = "Time from candidate to decision"
    if not len(delays) or not delays["decided"].any():
        title += " (no decisions recorded: weeks waiting so far)"
    ax.set_title(title)
    ax.set_ylim(0, max([*(d + w for d, w in zip(decided, waiting, strict=True)), 1]) * 1.3)
    ax.legend(loc="upper right", ncol=2, frameon=False)
    return ax
