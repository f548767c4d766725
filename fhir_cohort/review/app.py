"""The worklist's web application (Starlette): pages over the screening history and the one
form that saves a decision through :meth:`History.save_decision`.

The history connection is opened when the server starts, in its event loop's thread, and every
handler runs in that thread (``async def``, no thread pool): one SQLite connection, one
writer, queries of a few milliseconds, and no connection shared across threads (sqlite3
refuses that). The decision rules (queues, flags, validation, version checks) are the
history's; this module only shows them and passes a form on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from fhir_cohort.errors import DecisionConflict, DecisionError, HistoryError
from fhir_cohort.history.db import History, open_history
from fhir_cohort.history.decisions import Decision, Worklist
from fhir_cohort.review import pages
from fhir_cohort.review.pages import FormValues, Notice
from fhir_cohort.review.security import Access, Guard, content_security_policy

__all__ = ["MAX_FORM_BYTES", "ReviewSettings", "build_app"]

# A decision form is a few short fields and two texts of at most 4,000 characters each.
MAX_FORM_BYTES = 64 * 1024
_FORM_FIELDS = ("decision", "reason", "contact_status", "note", "version")


@dataclass(frozen=True)
class ReviewSettings:
    history: Path
    reviewer: str  # who the audit log names for every save from this server
    trial: str | None = None  # serve only this trial


def build_app(settings: ReviewSettings, access: Access) -> Starlette:
    """The ASGI application: the routes behind :class:`~fhir_cohort.review.security.Guard`."""
    state: dict[str, History] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        state["history"] = open_history(settings.history, create=False)
        try:
            yield
        finally:
            state.pop("history").close()

    def history() -> History:
        return state["history"]

    def trials() -> list[str]:
        if settings.trial:
            return [settings.trial]
        return list(dict.fromkeys(r.trial_id for r in history().runs()))

    async def index(request: Request) -> Response:
        served = trials()
        if len(served) == 1:
            return RedirectResponse(pages.trial_path(served[0]), status_code=303)
        latest = {r.trial_id: r for r in history().runs() if r.trial_id in served}
        return HTMLResponse(pages.trials_page(list(latest.values())))

    def worklist_of(request: Request) -> Worklist | None:
        trial = request.path_params["trial"]
        if trial not in trials():
            return None
        try:
            return history().worklist(trial)
        except DecisionError:  # a trial with no run
            return None

    async def worklist(request: Request) -> Response:
        work = worklist_of(request)
        if work is None:
            return _not_found("no such trial in this history")
        previous = history().run(work.previous_run_id) if work.previous_run_id else None
        return HTMLResponse(pages.worklist_page(work, previous))

    def patient_view(
        request: Request, values: FormValues | None, notice: Notice | None, status: int
    ) -> Response:
        work = worklist_of(request)
        if work is None:
            return _not_found("no such trial in this history")
        pid = request.path_params["patient"]
        entry = work.entry(pid)
        if entry is None:
            return _not_found("no such patient in this trial's worklist")
        h = history()
        page = pages.patient_page(
            work,
            entry,
            h.patient_answers(work.run.run_id, pid),
            h.decision_log(work.run.trial_id, pid),
            values if values is not None else FormValues.of(entry.decision),
            notice,
        )
        return HTMLResponse(page, status_code=status)

    async def patient(request: Request) -> Response:
        saved = _int(request.query_params.get("saved"))  # set by the redirect after a save
        notice = Notice("saved", f"Saved (version {saved}).") if saved > 0 else None
        return patient_view(request, None, notice, 200)

    async def save(request: Request) -> Response:
        form = await _read_form(request)
        if isinstance(form, Response):
            return form
        work = worklist_of(request)
        pid = request.path_params["patient"]
        if work is None or work.entry(pid) is None:
            return _not_found("no such patient in this trial's worklist")
        sent = FormValues(
            form.get("decision", ""),
            form.get("reason", ""),
            form.get("contact_status", ""),
            form.get("note", ""),
            _int(form.get("version")),
        )
        try:
            saved = history().save_decision(
                work.run.trial_id,
                pid,
                decision=sent.decision or None,
                reason=sent.reason,
                contact_status=sent.contact_status,
                note=sent.note,
                who=settings.reviewer,
                expected_version=sent.version,
            )
        except DecisionConflict as exc:
            current = exc.current if isinstance(exc.current, Decision) else None
            who = f" by {current.decided_by} at {current.decided_at}" if current else ""
            notice = Notice(
                "conflict",
                "Not saved: this patient was saved by someone else since you opened it.",
                f"The saved decision is now version {exc.actual}{who} (shown under Decision "
                "and in the audit log). Your entry is still in the form: check the saved one, "
                "then save again to replace it.",
            )
            # The form keeps what the coordinator typed, now based on the saved version: a
            # second Save is a deliberate overwrite, never a silent one.
            values = FormValues(
                sent.decision, sent.reason, sent.contact_status, sent.note, exc.actual
            )
            return patient_view(request, values, notice, 409)
        except DecisionError as exc:
            notice = Notice("error", "Not saved.", str(exc))
            return patient_view(request, sent, notice, 400)
        target = pages.patient_path(work.run.trial_id, pid) + f"?saved={saved.version}"
        return RedirectResponse(target, status_code=303)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/trials/{trial}", worklist, methods=["GET"]),
        Route("/trials/{trial}/patients/{patient}", patient, methods=["GET"]),
        Route("/trials/{trial}/patients/{patient}", save, methods=["POST"]),
    ]
    csp = content_security_policy(pages.stylesheet())
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, access=access, csp=csp)],
        lifespan=lifespan,
        exception_handlers={HistoryError: _history_error},
    )


def _int(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        return -1  # never a saved version: the save is refused as a conflict


def _not_found(text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=404)


async def _history_error(request: Request, exc: Exception) -> Response:
    # HistoryError messages name files and run ids, never patient data.
    return PlainTextResponse(f"history: {exc}\n", status_code=500)


async def _read_form(request: Request) -> dict[str, str] | Response:
    """The decision form's fields: URL-encoded only (what an HTML form sends), bounded."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return PlainTextResponse("a form post expected\n", status_code=415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return PlainTextResponse("form too large\n", status_code=413)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=len(_FORM_FIELDS) * 2
        )
    except (UnicodeDecodeError, ValueError):
        return PlainTextResponse("a form post expected\n", status_code=400)
    return {k: v for k, v in pairs if k in _FORM_FIELDS}
