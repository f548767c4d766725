"""The worklist server: uvicorn on a socket bound here, to 127.0.0.1 only.

Binding the socket before uvicorn starts gives the port (``--port 0``: a free one the system
picks) before the first request, so the Host check and the printed address know it, and
connections made before the event loop runs wait in the listen queue instead of failing.
uvicorn's own logging configuration and access log are off: :class:`~.security.Guard` logs one
line per request without its path or query (patient ids, the token).
"""

from __future__ import annotations

import errno
import getpass
import logging
import socket
import threading
from pathlib import Path

import uvicorn

from fhir_cohort.errors import OptionError
from fhir_cohort.history.db import open_history
from fhir_cohort.review.app import ReviewSettings, build_app
from fhir_cohort.review.security import Access

__all__ = ["HOST", "ReviewServer", "default_reviewer"]

HOST = "127.0.0.1"


def default_reviewer() -> str:
    """The audit log's "who" when none is given: the login name of this computer's user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return "unknown"


class ReviewServer:
    """The chart-review worklist over the history at ``history``, served at
    ``http://127.0.0.1:<port>/``; sign in with :attr:`url` (a one-time token).

    ``serve()`` blocks until Ctrl-C (SIGINT) or SIGTERM; ``start()`` / ``stop()`` (or ``with``)
    run it in a background thread. Raises :class:`HistoryError` for a missing or unusable
    history, :class:`OptionError` for a trial without runs in it or a port that is taken."""

    def __init__(
        self,
        history: str | Path,
        *,
        trial: str | None = None,
        port: int = 0,
        reviewer: str | None = None,
    ) -> None:
        path = Path(history)
        with open_history(path, create=False) as h:  # fail before binding anything
            if trial is not None and not h.runs(trial):
                raise OptionError(f"--trial {trial}: no run of it in {path}")
        self._socket = _listen(port)
        self.port: int = self._socket.getsockname()[1]
        self.access = Access(self.port)
        settings = ReviewSettings(path, reviewer or default_reviewer(), trial)
        self.app = build_app(settings, self.access)
        config = uvicorn.Config(
            self.app,
            host=HOST,
            port=self.port,
            log_config=None,  # leave the process's logging as the CLI set it up
            access_log=False,  # its lines carry the path and query: patient ids, the token
            server_header=False,
            lifespan="on",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=5,
        )
        # uvicorn writes its access line whenever "uvicorn.access" has a handler anywhere up
        # its chain (access_log=False only clears that logger's own): switched off for good.
        logging.getLogger("uvicorn.access").disabled = True
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open: works once, then the browser holds a session cookie."""
        return self.access.login_url()

    @property
    def origin(self) -> str:
        return self.access.origin

    def serve(self) -> None:
        """Serve until SIGINT or SIGTERM (in the main thread) or :meth:`stop`."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self) -> ReviewServer:
        """Serve in a background thread. Requests may be sent at once: the socket listens."""
        self._thread = threading.Thread(target=self.serve, name="fhir-cohort-review", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._socket.close()

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or "refused"
        raise OptionError(f"--port {port}: cannot listen on {HOST}:{port} ({why})") from None
    return sock
