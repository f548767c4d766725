"""Command line: thin. Builds library objects, calls one function, maps errors to exit codes."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cohort import __version__, defaults
from fhir_cohort.errors import (
    AuthError,
    BulkExportAlreadyRunningError,
    BulkExportTimeout,
    CapabilityError,
    CriteriaError,
    DecisionConflict,
    DecisionError,
    FhirCohortError,
    FhirHttpError,
    HistoryError,
    OptionError,
    SourceError,
    TerminologyError,
)
from fhir_cohort.history.db import HISTORY_NAME, default_history_path
from fhir_cohort.logs import configure as configure_logging
from fhir_cohort.progress import Progress

if TYPE_CHECKING:
    from fhir_cohort.remote import ServerOptions

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CRITERIA = 3
EXIT_DATA = 4
EXIT_SERVER = 5
EXIT_AUTH = 6
EXIT_CAPABILITY = 7
EXIT_EXPORT_BUSY = 8
EXIT_EXPORT_PENDING = 9
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    unexpected error (a bug: please report it with the command, without patient data)
  2    usage error (bad option or value)
  3    criteria file or value set invalid
  4    input data unreadable, or malformed with --strict; screening history unusable;
       a decisions file refused (its problems listed by file:line; nothing imported)
  5    FHIR server error after retries (a crawl first finishes the other patients; the
       same command again fetches only the searches that failed)
  6    authentication or authorisation failed
  7    the server lacks a resource type, search parameter or operation the plan needs
  8    the server refused the Bulk $export: another export by this client is running (429)
  9    the Bulk export is still running on the server (its state is saved): run the same
       command again to continue, or use --wait
  130  interrupted (Ctrl-C); a re-run resumes where possible
"""

# Order matters: most specific first.
_ERROR_EXIT: tuple[tuple[type[BaseException], int], ...] = (
    (AuthError, EXIT_AUTH),
    (BulkExportAlreadyRunningError, EXIT_EXPORT_BUSY),
    (BulkExportTimeout, EXIT_EXPORT_PENDING),
    (FhirHttpError, EXIT_SERVER),
    (CapabilityError, EXIT_CAPABILITY),
    (CriteriaError, EXIT_CRITERIA),
    (TerminologyError, EXIT_CRITERIA),
    (SourceError, EXIT_DATA),
    (HistoryError, EXIT_DATA),
    (DecisionError, EXIT_DATA),
    (DecisionConflict, EXIT_DATA),
    (OptionError, EXIT_USAGE),
    (FhirCohortError, EXIT_ERROR),
)


def exit_code_for(exc: BaseException) -> int:
    # an auth failure wrapped by a caller (a refused $export kick-off) is still an auth failure
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, AuthError):
            return EXIT_AUTH
        cause = cause.__cause__
    for kind, code in _ERROR_EXIT:
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    return path


def _existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


class _Bars:
    """tqdm bars keyed by progress stage, drawn on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: dict[str, object] = {}

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        # No monitor thread: the reader forks worker processes.
        tqdm.monitor_interval = 0
        if p.unit == "note":  # a one-off message, not a bar
            tqdm.write(f"{p.stage}: {p.message}", file=sys.stderr)
            return
        bar = self._bars.get(p.stage)
        if bar is None:
            bar = tqdm(total=p.total, desc=p.stage, unit=p.unit, file=sys.stderr, leave=False)
            self._bars[p.stage] = bar
        elif p.total is not None and bar.total != p.total:  # type: ignore[attr-defined]
            bar.total = p.total  # type: ignore[attr-defined]
        if p.message:
            bar.set_postfix_str(p.message, refresh=False)  # type: ignore[attr-defined]
        if p.advance:
            bar.update(p.advance)  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()  # type: ignore[attr-defined]
        self._bars.clear()


def _add_screen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "screen",
        help="screen FHIR data for trial candidates",
        description=(
            "Screen every patient in a FHIR data set against a trial's eligibility criteria. "
            "Writes patients.csv (one row per patient: status and every criterion's answer), "
            "evidence.csv (the records behind each answer), attrition.csv, unmapped.csv (the "
            "most frequent codes no value set matched, with counts), group.json (a FHIR "
            "Group of the candidates) and run.json (what was run on what) into --out, readable "
            "by you only."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--source",
        metavar="PATH|URL",
        help=(
            "a Bulk Data export folder (<Type>*.ndjson[.gz]), a Bundle JSON file, a folder "
            "of Bundles, or a FHIR R4 server base URL (default: the bundled synthetic demo "
            "hospital)"
        ),
    )
    p.add_argument(
        "--criteria",
        metavar="FILE|DIR",
        type=_existing_path,
        action="append",
        help="trial criteria file, YAML or JSON (default: the bundled NCT06038474 criteria); "
        "repeat it, or name a folder (every *.yaml, *.yml, *.json in it), to screen several "
        "trials in one read of the data: OUT/<trial id>/ per trial, OUT/trials.csv (patient x "
        "trial) and OUT/index.html",
    )
    p.add_argument(
        "--as-of",
        metavar="DATE",
        type=_iso_date,
        help="screening date S, YYYY-MM-DD; records dated after it are ignored (default: today)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path("out"),
        help="output folder, created with owner-only permissions (default: ./out)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first malformed resource instead of skipping and counting it",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept a file or folder in which no Patient is found (default: an error)",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="validate every resource against the FHIR R4 models (slower; default: "
        "structural checks only)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="processes for reading large inputs (default: number of CPUs)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: this machine's processes (default); spark: a Spark session's executors "
        "(the extra fhir-cohort[spark] and Java 17; --source then also takes Hadoop URIs such "
        "as s3a://bucket/export; docs/spark.md)",
    )
    p.add_argument(
        "--spark-master",
        metavar="URL",
        help="with --engine spark outside spark-submit: the master (default local[*]; under "
        "spark-submit its own session is used)",
    )
    p.add_argument(
        "--show-identifiers",
        action="store_true",
        help="show patient identifiers in report.html (default: pseudonymous row numbers and "
        "FHIR ids only)",
    )
    p.add_argument(
        "--publish-group",
        action="store_true",
        help="write the candidate Group (with each member's status, reasons and evidence "
        "references) back to the --source server; re-runs update the same Group",
    )
    p.add_argument(
        "--publish-subjects",
        action="store_true",
        help="write the trial as a ResearchStudy and each candidate as a ResearchSubject with "
        "its recruitment status to the --source server (in transaction Bundles); re-runs "
        "update them in place, patients no longer candidates included",
    )
    p.add_argument(
        "--unmapped-text",
        action="store_true",
        help="list medications known only by free text in unmapped.csv by their text (off by "
        "default: free text can hold anything)",
    )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="the FHIR base URL the files on disk came from: absolute references with this base "
        "resolve (default: the base a Bulk export or snapshot recorded, else none)",
    )
    history = p.add_mutually_exclusive_group()
    history.add_argument(
        "--history",
        metavar="FILE",
        type=Path,
        help="the screening history (SQLite) this run is recorded in and compared with: new "
        "candidates, status changes and patients no longer in the source since the trial's "
        "previous run go to the summary, report.html and changes.csv (default: "
        f"{HISTORY_NAME} in the folder that holds --out, so weekly --out folders share it)",
    )
    history.add_argument(
        "--no-history", action="store_true", help="record nothing and compare with nothing"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
    _add_server_options(p)


SERVER_HELP = """\
When --source is a FHIR server URL (https://...), what the criteria need is fetched into an
NDJSON snapshot (--cache, default OUT/snapshot) and screened from there. Secrets are read from
the environment or files, never from the command line:
  FHIR_COHORT_TOKEN / FHIR_COHORT_TOKEN_FILE                        bearer token
  FHIR_COHORT_BASIC_USER + FHIR_COHORT_BASIC_PASSWORD(_FILE)        HTTP basic
  FHIR_COHORT_CLIENT_ID + FHIR_COHORT_PRIVATE_KEY (PEM) or FHIR_COHORT_JWKS (private JWKS)
                                                                    SMART Backend Services
"""


def _iso_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date-time (ISO 8601): {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    if name.strip().lower() in {"authorization", "cookie", "proxy-authorization"}:
        raise argparse.ArgumentTypeError(
            f"{name.strip()} would land in shell history: use the FHIR_COHORT_* variables"
        )
    return name.strip(), value.strip()


def _add_server_options(p: argparse.ArgumentParser) -> None:
    from fhir_cohort.fhir.server_profile import vendor_names  # the file names only: stdlib

    g = p.add_argument_group("FHIR server source", SERVER_HELP)
    g.add_argument(
        "--strategy",
        choices=("funnel", "full", "bulk", "crawl", "auto"),
        default="funnel",
        help="funnel: find patients with the entry codes, then fetch only their records "
        "(default); full: fetch every resource of the needed types; bulk: a Bulk Data "
        "$export; crawl: the records of each patient of --group or --patients, searched per "
        "patient (for EHRs that answer only per patient: Epic, Oracle Health); auto: probe the "
        "server first (a few cheap requests); with a patient list, crawl it (or export the "
        "Group with --level group where the server can); on a server that needs a patient on "
        "every search, refuse without one; else bulk when the server offers $export and the "
        "entry query matches more than --auto-threshold Conditions, else funnel (the choice, "
        "why and the server's profile go to run.json)",
    )
    g.add_argument(
        "--patients",
        type=Path,
        metavar="FILE",
        help="--strategy crawl: a file with one FHIR Patient id or system|value identifier "
        "(an MRN, resolved with Patient?identifier=) a line, or an earlier snapshot or export "
        "folder (its patients)",
    )
    g.add_argument(
        "--crawl-batch",
        type=_positive_int,
        default=1,
        metavar="N",
        help="patients per crawl request (default 1; more only where the server accepts "
        "patient=a,b,c: Epic rejects it)",
    )
    g.add_argument(
        "--auto-threshold",
        type=_non_negative_int,
        default=defaults.AUTO_BULK_THRESHOLD,
        metavar="N",
        help="entry-query Conditions above which auto picks bulk "
        f"(default {defaults.AUTO_BULK_THRESHOLD})",
    )
    g.add_argument(
        "--server-profile",
        metavar="NAME|FILE",
        help="the server's limits as documented instead of probing it: a vendor ("
        + ", ".join(vendor_names())
        + ") or a YAML file in the same schema (docs/architecture.md, Server profiles)",
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.BATCH_SIZE,
        metavar="N",
        help="patients per follow-up query, sent as POST _search when long "
        f"(default {defaults.BATCH_SIZE})",
    )
    g.add_argument(
        "--concurrency",
        type=_positive_int,
        default=defaults.CONCURRENCY,
        metavar="N",
        help=f"parallel requests (default {defaults.CONCURRENCY})",
    )
    g.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="snapshot folder; an interrupted fetch resumes from it",
    )
    g.add_argument(
        "--since",
        type=_iso_datetime,
        metavar="DATETIME",
        help="with an existing --cache: fetch only what changed since then (_lastUpdated)",
    )
    _add_connection_options(g)
    _add_bulk_options(g)


def _add_connection_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="PEM",
        help="CA certificates to verify the server with (TLS is always verified)",
    )
    g.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'N: V'",
        help="extra request header (not for secrets); repeatable",
    )
    g.add_argument(
        "--auth",
        choices=("none", "bearer", "basic", "smart"),
        help="authentication (default: chosen from which variables are set)",
    )
    g.add_argument("--client-id", help="SMART client id (or FHIR_COHORT_CLIENT_ID)")
    g.add_argument("--private-key", type=Path, metavar="PEM", help="SMART signing key file")
    g.add_argument("--jwks", type=Path, metavar="FILE", help="SMART private JWKS file")
    g.add_argument("--kid", help="SMART key id (default: from the key/JWKS)")
    g.add_argument("--alg", choices=("RS384", "ES384"), help="SMART signing algorithm")
    g.add_argument("--scope", help="SMART scopes (default system/*.read)")
    g.add_argument("--token-url", help="SMART token endpoint (default: discovered)")
    g.add_argument(
        "--rate-limit",
        type=_positive_float,
        metavar="RPS",
        help="at most this many requests per second",
    )
    g.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="follow links and redirects to this other origin (scheme://host:port), without "
        "credentials; credentials only ever go to --source's origin; repeatable",
    )
    g.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow credentials over plain http to a host that is not loopback",
    )
    g.add_argument(
        "--timeout",
        type=_positive_float,
        default=defaults.TIMEOUT,
        metavar="S",
        help=f"read timeout per request in seconds (default {defaults.TIMEOUT:g})",
    )


def _add_bulk_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--level",
        choices=("system", "patient", "group"),
        default="system",
        help="Bulk $export level (default system; patient/group exports leave "
        "out Medication resources, which are in no patient compartment)",
    )
    g.add_argument(
        "--group",
        metavar="ID",
        help="a Group id: its members are the patients --strategy crawl screens, or the Group "
        "--level group exports",
    )
    g.add_argument(
        "--no-type-filter",
        action="store_true",
        help="export whole resource types instead of the criteria's _typeFilter",
    )
    g.add_argument(
        "--poll-max",
        type=_positive_float,
        default=defaults.BULK_POLL_MAX,
        metavar="S",
        help="longest wait in seconds between two export status polls; the server's "
        f"Retry-After is honoured up to it (default {defaults.BULK_POLL_MAX:g})",
    )
    g.add_argument(
        "--max-wait",
        type=_positive_float,
        metavar="S",
        help="longest this run waits for the export, in seconds (default "
        f"{defaults.BULK_MAX_WAIT:g}); past it, or as soon as the server's Retry-After "
        "reaches past it, the job is saved and the command exits 9 (export still running: "
        "run the same command again to continue)",
    )
    g.add_argument(
        "--wait",
        action="store_true",
        help="wait until the export completes, however long the server asks (polling at "
        "most every --poll-max seconds) instead of exiting 9",
    )
    g.add_argument(
        "--restart",
        action="store_true",
        help="discard an unfinished export in the folder instead of resuming it",
    )
    g.add_argument(
        "--reuse-export",
        action="store_true",
        help="screen a complete export or REST snapshot already in the folder (--out for "
        "export, --cache for screen) instead of downloading again; the data may be stale "
        "(the summary and run.json state its data cut). Without it an unfinished export or "
        "an interrupted run's snapshot is resumed, a completed one is fetched again",
    )


def _server_options(args: argparse.Namespace) -> ServerOptions:
    # Imported here: the server code (requests, the JWT stack) only for commands that use it.
    from fhir_cohort.fhir.auth import AuthOptions
    from fhir_cohort.remote import ServerOptions

    if args.wait and args.max_wait is not None:
        raise OptionError("--wait (no limit) and --max-wait contradict each other")
    # `export` has no screen-only options: those keep the library's defaults.
    return ServerOptions(
        strategy=getattr(args, "strategy", "bulk"),
        cache_dir=getattr(args, "cache", None),
        since=args.since,
        ca_bundle=args.ca_bundle,
        headers=tuple(args.header),
        auth=AuthOptions(
            kind=args.auth,
            client_id=args.client_id,
            private_key=args.private_key,
            jwks=args.jwks,
            kid=args.kid,
            alg=args.alg,
            scope=args.scope,
            token_url=args.token_url,
        ),
        timeout=args.timeout,
        batch_size=getattr(args, "batch_size", defaults.BATCH_SIZE),
        concurrency=getattr(args, "concurrency", defaults.CONCURRENCY),
        requests_per_second=args.rate_limit,
        allow_origins=tuple(args.allow_origin),
        allow_insecure_http=args.allow_insecure_http,
        patients=getattr(args, "patients", None),
        crawl_batch=getattr(args, "crawl_batch", 1),
        bulk_level=args.level,
        bulk_group=args.group,
        bulk_type_filter=not args.no_type_filter,
        bulk_resume=not args.restart,
        bulk_poll_max=args.poll_max,
        bulk_max_wait=None if args.wait else (args.max_wait or defaults.BULK_MAX_WAIT),
        reuse_export=args.reuse_export,
        auto_threshold=getattr(args, "auto_threshold", defaults.AUTO_BULK_THRESHOLD),
        server_profile=getattr(args, "server_profile", None),
    )


def _add_valuesets(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "valuesets",
        help="list the value sets and their sizes",
        description="List the bundled value sets: id, version, title and concepts per system.",
    )


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="run (or resume) a FHIR Bulk Data $export into a folder",
        description=(
            "Run a FHIR Bulk Data $export of the resource types the criteria need, with the "
            "criteria's _typeFilter, into --out: gzip NDJSON files that `fhir-cohort screen "
            "--source DIR` reads unchanged, the manifest, error files and an append-only "
            "export_log.ndjson. An interrupted export resumes from the folder (its status URL, "
            "or the files still missing); a partial file is never taken for a complete one."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", required=True, metavar="URL", help="FHIR server base URL")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="export folder")
    p.add_argument(
        "--criteria",
        type=_existing_file,
        metavar="FILE",
        help="criteria the _typeFilter is built from (default NCT06038474)",
    )
    p.add_argument(
        "--since",
        type=_iso_datetime,
        metavar="DATETIME",
        help="only resources changed since then (_since)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
    g = p.add_argument_group("FHIR server", SERVER_HELP)
    _add_connection_options(g)
    _add_bulk_options(g)


def _add_requirements(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "requirements",
        help="print what the criteria read from the data (JSON)",
        description=(
            "Print, as JSON, what screening reads: resource types, value sets, codes per "
            "system, medication names, the Observation LOINC tokens, the funnel's entry query, "
            "how far back records can matter, and the patient fields (docs/architecture.md, "
            "'What a trial needs'). Several --criteria: their union (one pass)."
        ),
    )
    p.add_argument(
        "--criteria",
        type=_existing_file,
        action="append",
        metavar="FILE",
        help="criteria file (default NCT06038474); repeat for the union of several",
    )
    p.add_argument(
        "--codes", action="store_true", help="list the codes and names, not only their counts"
    )


def _add_decisions_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decisions",
        help="export or import chart-review decisions (CSV)",
        description="Chart-review decisions and contact statuses kept in the screening "
        "history, to and from CSV for sites that keep them elsewhere (docs/history.md, "
        "'Decisions'). The file holds patient ids and notes: it is written 0600.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("export", "write a trial's current decisions to a CSV file"),
        (
            "import",
            "save the decisions of a CSV file: every row checked first (unknown values or "
            "patients, stale versions, reported as file:line); nothing imported unless all "
            "are valid",
        ),
    ):
        a = actions.add_parser(name, help=text, description=text, epilog=EXIT_CODES_HELP)
        _history_file_arg(a, "; never created")
        a.add_argument("--trial", required=True, metavar="ID", help="the trial id (NCT...)")
        if name == "export":
            a.add_argument("--out", required=True, type=Path, metavar="FILE", help="CSV to write")
        else:
            a.add_argument("file", type=_existing_file, metavar="FILE", help="CSV to import")
            a.add_argument(
                "--who",
                metavar="NAME",
                help="who imports (recorded in the audit log; default: your login name)",
            )
            a.add_argument("--dry-run", action="store_true", help="check the file, save nothing")


def _history_file_arg(p: argparse.ArgumentParser, more: str = "") -> None:
    """The --history FILE option of the commands that read a screening history."""
    p.add_argument(
        "--history",
        metavar="FILE",
        type=Path,
        default=Path(HISTORY_NAME),
        help=f"the history file (default: ./{HISTORY_NAME}{more})",
    )


def _add_history_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history",
        help="list the runs recorded in the screening history",
        description="List the screening runs recorded in the history: run id, trial, as-of "
        "date, data cut, counts, criteria hash, tool version and output folder.",
    )
    _history_file_arg(p, ", beside the default --out")
    p.add_argument("--trial", metavar="ID", help="only this trial's runs")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    d = sub.add_parser(
        "diff",
        help="what changed between two runs of the screening history",
        description="What changed from run OLD to run NEW (ids from `fhir-cohort history`): "
        "new candidates, status changes with the criterion that changed and its new evidence, "
        "candidates with changed answers or evidence, patients no longer in the source. The "
        "columns of changes.csv; patient ids are printed, so treat the output as patient data.",
    )
    d.add_argument("old", type=_positive_int, metavar="OLD", help="the earlier run id")
    d.add_argument("new", type=_positive_int, metavar="NEW", help="the later run id")
    _history_file_arg(d)


def _add_review(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="serve the chart-review worklist (a local web page over the history)",
        description="Serve the chart-review worklist of the history's latest runs on "
        "127.0.0.1: the review queue and the candidates with their evidence, and a form per "
        "patient for the decision, the contact status and a note (audit-logged). Prints an "
        "address with a one-time token: open it in a browser on this computer. Ctrl-C stops "
        "the server. See docs/review.md.",
    )
    _history_file_arg(p)
    p.add_argument("--trial", metavar="ID", help="serve only this trial's worklist")
    p.add_argument(
        "--port",
        type=_non_negative_int,
        default=0,
        help="the port on 127.0.0.1 (default 0: a free one, chosen at random)",
    )
    p.add_argument(
        "--reviewer",
        metavar="NAME",
        help="who the audit log names for decisions saved through this server (default: "
        "this computer's login name)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-cohort",
        description=(
            "Find clinical-trial candidates in FHIR R4 data (a Bulk Data export on disk or a "
            "FHIR server), with the evidence behind every decision."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fhir-cohort {__version__}")
    parser.add_argument(
        "--verbose",
        "-v",
        action="count",
        default=0,
        help="more log output (-vv for debug, -vvv with HTTP library logs; query strings are "
        "never logged)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_screen(sub)
    _add_export(sub)
    _add_valuesets(sub)
    _add_requirements(sub)
    _add_decisions_command(sub)
    _add_history_commands(sub)
    _add_review(sub)
    return parser


def _check_options(args: argparse.Namespace) -> None:
    """What argparse cannot check alone, before any work (OptionError: exit 2)."""
    from fhir_cohort.files import prepare_out_dir, warn_if_exposed

    if args.level == "group" and not args.group:
        raise OptionError("--level group needs --group ID")
    # screen --strategy crawl (or auto) crawls the Group's members; otherwise --group names
    # the Group a --level group export reads (ServerOptions checks the same)
    if (
        args.group
        and args.level != "group"
        and getattr(args, "strategy", "bulk")
        not in (
            "crawl",
            "auto",
        )
    ):
        raise OptionError(
            "--group is used only with --level group (Bulk export) or --strategy crawl"
        )
    cache = getattr(args, "cache", None)
    if cache is not None and cache.exists():
        if not cache.is_dir():
            raise OptionError(f"--cache {cache}: exists and is not a folder")
        warn_if_exposed(cache, "--cache folder")
    prepare_out_dir(args.out, "--out")


def _cmd_screen(args: argparse.Namespace) -> int:
    server = _server_options(args)  # bad options fail before any work
    _check_options(args)
    from fhir_cohort.pipeline import screen, screen_many

    criteria = args.criteria or []
    # One criteria file keeps today's layout (outputs in OUT); several, or a folder, write
    # OUT/<trial id>/ per trial plus OUT/trials.csv and OUT/index.html.
    several = len(criteria) > 1 or any(path.is_dir() for path in criteria)
    bars = _Bars(enabled=not args.quiet and sys.stderr.isatty())
    history = None if args.no_history else args.history or default_history_path(args.out)
    spark, owned = _spark_session(args)
    try:
        result = (screen_many if several else screen)(
            args.source,
            criteria=criteria if several else (criteria[0] if criteria else None),
            as_of=args.as_of,
            out_dir=args.out,
            strict=args.strict,
            validate=args.validate,
            workers=args.workers,
            progress=bars,
            server=server,
            show_identifiers=args.show_identifiers,
            publish_group=args.publish_group,
            publish_subjects=args.publish_subjects,
            unmapped_text=args.unmapped_text,
            allow_empty=args.allow_empty,
            base_url=args.base_url,
            history=history,
            spark=spark,
        )
    finally:
        bars.close()
        if spark is not None and owned:
            from fhir_cohort.spark.engine import stop_local_session

            stop_local_session(spark)
    if not args.quiet:
        print(result.summary())
        runs = [r.run for r in result.values()] if several else [result.run]
        run = runs[0]
        if run.get("data_cut"):
            print(f"data cut: {_data_cut_note(run)}")
        utf8 = run.get("invalid_utf8") or {}
        if utf8.get("records"):
            where = ", ".join(utf8["locations"][:5]) + (", ..." if utf8["records"] > 5 else "")
            print(f"read {utf8['records']} records with invalid UTF-8 replaced (U+FFFD): {where}")
        for one in runs:
            published = one.get("published_group")
            if published:
                which = f", {one['trial']['id']}" if several else ""
                print(
                    f"Group/{published['id']} {published['action']} on the server "
                    f"({published['members']} members{which})"
                )
            research = one.get("published_research")
            if research:
                which = f", {one['trial']['id']}" if several else ""
                study, subjects = research["study"], research["subjects"]
                print(
                    f"ResearchStudy/{study['id']} {study['action']} on the server; "
                    f"ResearchSubjects: {subjects['created']} created, {subjects['updated']} "
                    f"updated, {subjects['unchanged']} unchanged, {subjects['kept_site_status']} "
                    f"kept at the site's status, {subjects['decisions_applied']} from "
                    f"coordinators' decisions ({research['requests']} requests{which})"
                )
    return EXIT_OK


def _spark_session(args: argparse.Namespace) -> tuple[Any, bool]:
    """The SparkSession of ``--engine spark`` (None for the local engine): spark-submit's own
    when there is one, else a local one (``--spark-master``, default all cores), and whether
    this command started it (and stops it: the JVM writes its class archive then)."""
    if args.engine != "spark":
        if args.spark_master:
            raise OptionError("--spark-master is for --engine spark")
        return None, False
    try:
        from fhir_cohort.spark.engine import local_session
    except ImportError as exc:
        raise OptionError(
            "--engine spark needs the extra: pip install 'fhir-cohort[spark]' (and Java 17)"
        ) from exc
    # PySpark 4 warns on every pandas UDF that it "does not yet fully support pandas >= 3";
    # the Spark tests compare its outputs byte for byte with the local engine's under pandas 3
    # (docs/spark.md), so the CLI (which owns this process) does not print it on every run.
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    try:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            return active, False
        return local_session(args.spark_master or "local[*]", class_archive=True), True
    except ImportError as exc:
        raise OptionError(
            "--engine spark needs the extra: pip install 'fhir-cohort[spark]' (and Java 17)"
        ) from exc
    except Exception as exc:  # no Java, a bad master URL: say so without a Java stack
        raise OptionError(
            f"--engine spark: cannot start a Spark session ({type(exc).__name__}); it needs "
            "Java 17 (scripts/install_java.sh)"
        ) from exc


def _data_cut_note(run: dict) -> str:
    """The data cut and where it comes from: a re-used export is old data, say so."""
    fetch = (run.get("source") or {}).get("fetch") or {}
    if fetch.get("strategy") != "bulk":
        reused = "; a completed snapshot reused (--reuse-export)" if fetch.get("reused") else ""
        return f"{run['data_cut']} (fetch started{reused})"
    export = fetch.get("export") or {}
    how = (
        "a completed export reused (--reuse-export), no request sent"
        if fetch.get("reused")
        else "a new export: the earlier job's files had expired on the server"
        if export.get("reexported")
        else "an unfinished export resumed"
        if fetch.get("resumed")
        else "a new export"
    )
    return f"{run['data_cut']} (export transactionTime; {how})"


def _cmd_export(args: argparse.Namespace) -> int:
    from fhir_cohort.criteria import check_value_sets, default_criteria_path, load_criteria
    from fhir_cohort.remote import build_client, bulk_request, run_bulk
    from fhir_cohort.terminology import Terminology

    options = _server_options(args)  # bad options fail before any work
    _check_options(args)
    trial = load_criteria(args.criteria or default_criteria_path())
    terminology = Terminology.load()
    check_value_sets(trial, terminology)
    request = bulk_request(trial, terminology, options)
    bars = _Bars(enabled=not args.quiet and sys.stderr.isatty())
    try:
        result = run_bulk(
            build_client(args.source, options),
            request,
            args.out,
            resume=options.bulk_resume,
            reuse=options.reuse_export,
            poll_max=options.bulk_poll_max,
            max_wait=options.bulk_max_wait,
            progress=bars,
        )
    finally:
        bars.close()
    if not args.quiet:
        counts = result.resources_by_type()
        how = (
            "reused, no request sent"
            if result.reused
            else "new (the earlier job's files had expired)"
            if result.reexported
            else "resumed"
            if result.resumed
            else "new"
        )
        print(
            f"exported {sum(counts.values())} resources in {len(result.files)} files "
            f"(data cut: transactionTime {result.transaction_time}; {how} export) to {args.out}"
        )
        for rtype, n in sorted(counts.items()):
            print(f"  {rtype:<26} {n:>10}")
        if result.errors.resources:
            print(
                f"server reported {result.errors.resources} OperationOutcome issues "
                f"(see {args.out}/errors)"
            )
        if result.deleted:
            gone = ", ".join(f"{n} {t}" for t, n in result.deleted_by_type().items())
            print(f"deleted on the server (manifest deleted[], left out of the data): {gone}")
    return EXIT_OK


def _cmd_valuesets(_: argparse.Namespace) -> int:
    from fhir_cohort.terminology import Terminology

    short = {
        "http://snomed.info/sct": "SNOMED",
        "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
        "http://hl7.org/fhir/sid/icd-9-cm": "ICD-9-CM",
        "http://loinc.org": "LOINC",
        "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    }
    rows = Terminology.load().summary()
    width = max(len(r["id"]) for r in rows)
    print(f"{'id':<{width}}  {'version':<9}  {'total':>5}  concepts per system / title")
    for r in rows:
        per = ", ".join(
            f"{short.get(s, s.rsplit('/', 1)[-1])} {n}" for s, n in r["concepts"].items()
        )
        print(f"{r['id']:<{width}}  {r['version']:<9}  {r['total']:>5}  {per} / {r['title']}")
    return EXIT_OK


def _cmd_requirements(args: argparse.Namespace) -> int:
    import json

    from fhir_cohort.criteria import check_value_sets, default_criteria_path, load_criteria
    from fhir_cohort.requirements import Requirements
    from fhir_cohort.terminology import Terminology

    terminology = Terminology.load()
    trials = [load_criteria(p) for p in args.criteria or [default_criteria_path()]]
    for trial in trials:
        check_value_sets(trial, terminology)
    needs = Requirements.of(trials, terminology)
    print(json.dumps(needs.to_json(codes=args.codes), indent=2))
    return EXIT_OK


def _cmd_decisions(args: argparse.Namespace) -> int:
    import getpass

    from fhir_cohort.history.db import open_history
    from fhir_cohort.history.transfer import export_decisions, import_decisions

    with open_history(args.history, create=False) as history:
        if args.action == "export":
            n = export_decisions(history, args.trial, args.out)
            print(f"exported {n} decisions of {args.trial} to {args.out}")
            return EXIT_OK
        try:
            who = args.who or getpass.getuser()
        except (OSError, KeyError):
            raise OptionError("--who: no login name to record; name who imports") from None
        done = import_decisions(history, args.trial, args.file, who=who, dry_run=args.dry_run)
    verb = "would save" if done.dry_run else "saved"
    print(f"{args.file}: {done.rows} rows checked; {verb} {done.saved}, {done.unchanged} unchanged")
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    import json

    from fhir_cohort.history.db import open_history

    with open_history(args.history, create=False) as history:
        runs = history.runs(args.trial)
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], indent=2))
        return EXIT_OK
    if not runs:
        print(f"no runs{f' of {args.trial}' if args.trial else ''} in {args.history}")
        return EXIT_OK
    header = (
        "run",
        "trial",
        "as of",
        "data cut",
        "patients",
        "eligible",
        "review",
        "ineligible",
        "prev",
        "criteria",
        "tool",
        "recorded",
        "outputs",
    )
    rows = [
        (
            str(r.run_id),
            r.trial_id,
            r.as_of,
            r.data_cut or "-",
            str(r.patients),
            str(r.eligible),
            str(r.review),
            str(r.ineligible),
            str(r.previous_run_id or "-"),
            (r.criteria_sha256 or "-")[:12],
            r.tool_version,
            r.recorded_at,
            r.out_dir or "-",
        )
        for r in runs
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    from fhir_cohort.history.db import open_history
    from fhir_cohort.history.diff import diff_runs

    with open_history(args.history, create=False) as history:
        diff = diff_runs(history, args.old, args.new)
    old, new = diff.old, diff.new
    if old is not None and old.trial_id != new.trial_id:
        print(f"note: run {old.run_id} is of {old.trial_id}, run {new.run_id} of {new.trial_id}")
    print(f"{new.trial_id}: {diff.summary()}; {diff.new_patients} patients new in the source")
    for c in diff.changes:
        status = f"{c.previous_status or '-'} -> {c.status or '-'}"
        line = f"{c.change:<20} {c.patient_id}  {status}"
        if c.criterion_id:
            line += f"  {c.criterion_id}: {c.previous_answer} -> {c.answer}"
        print(line)
        if c.reason:
            print(f"    reason: {c.reason}")
        if c.evidence:
            print(f"    evidence: {c.evidence}")
        if c.decision or c.contact_status:
            print(f"    decision: {c.decision or '-'}, contact: {c.contact_status or '-'}")
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_review(args: argparse.Namespace) -> int:
    from fhir_cohort.review.server import ReviewServer

    server = ReviewServer(args.history, trial=args.trial, port=args.port, reviewer=args.reviewer)
    # The token is in this line only: it works once, and is never logged.
    print(
        f"fhir-cohort review: open {server.url} in a browser on this computer (the address "
        "works once); Ctrl-C stops the server",
        flush=True,
    )
    # uvicorn stops on SIGINT or SIGTERM, then raises the signal again once it is done:
    # here, both are the normal way to stop (SIGTERM's default would kill the process)
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve()
    print("fhir-cohort review: stopped", flush=True)
    return EXIT_OK


_COMMANDS = {
    "screen": _cmd_screen,
    "export": _cmd_export,
    "valuesets": _cmd_valuesets,
    "requirements": _cmd_requirements,
    "history": _cmd_history,
    "decisions": _cmd_decisions,
    "diff": _cmd_diff,
    "review": _cmd_review,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)  # no query strings (patient ids) from any logger
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BulkExportTimeout as exc:
        # Not a failure of the export: it goes on on the server, and a re-run picks it up
        # (--restart would discard it: the re-run must leave that out).
        again = "without --restart " if getattr(args, "restart", False) else ""
        print(
            f"fhir-cohort: export still running; run the same command {again}again to "
            f"continue (--wait blocks until it completes). {exc}",
            file=sys.stderr,
        )
        return EXIT_EXPORT_PENDING
    except FhirCohortError as exc:
        # Messages are built to carry no patient data; see errors.py.
        print(f"fhir-cohort: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
