"""The chart-review worklist: a local web page over the screening history (docs/review.md).

``fhir-cohort review`` serves it on 127.0.0.1 behind a one-time token; ``server.py`` runs
uvicorn, ``app.py`` holds the Starlette routes, ``pages.py`` the HTML, ``security.py`` the
checks every request passes. Imported lazily: the CLI loads the web stack only for ``review``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_cohort._lazy import lazy_exports

_EXPORTS = {
    "ReviewServer": "fhir_cohort.review.server",
    "default_reviewer": "fhir_cohort.review.server",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fhir_cohort.review.server import ReviewServer, default_reviewer

__all__ = ["ReviewServer", "default_reviewer"]
