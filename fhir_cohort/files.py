"""Private files and folders: everything fhir-cohort writes can hold patient data.

The rule (docs/architecture.md, "Files and permissions"): every file the tool writes is created
0600 and every folder it creates 0700, whatever the umask; a folder the tool did not create is
never chmod-ed (a warning says when others can read it). Shared by ``fhir/`` (snapshots, bulk
exports, journals) and ``report/`` (outputs), so it lives at the top level and imports nothing
of either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fhir_cohort.errors import OptionError

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "open_private",
    "prepare_out_dir",
    "private_dir",
    "private_file",
    "private_writer",
    "warn_if_exposed",
]

log = logging.getLogger("fhir_cohort.files")

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_OTHERS = stat.S_IRWXG | stat.S_IRWXO
_warned: set[str] = set()


def private_dir(path: str | Path) -> Path:
    """Make sure folder ``path`` exists; every folder created here (parents too) is 0700.

    An existing folder keeps its mode: it is the user's (``--out .`` must not chmod the
    current folder).
    """
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # created meanwhile by another thread or process: not ours to chmod
        # mkdir's mode passes through the umask; a umask can only take bits away from 0700
        os.chmod(folder, PRIVATE_DIR_MODE)
    return path


def open_private(path: str | Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` with the file created, or tightened, to 0600 whatever the umask.

    ``mode`` is ``w``, ``a`` or ``x`` (plus ``b``); the folder must exist.
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    if "a" in mode:
        flags |= os.O_APPEND
    elif "x" in mode:
        flags |= os.O_EXCL
    elif "w" in mode:
        flags |= os.O_TRUNC
    else:
        raise ValueError(f"open_private writes only, not mode {mode!r}")
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        return os.fdopen(fd, mode.replace("x", "w"), **kwargs)
    except BaseException:
        os.close(fd)
        raise


def private_file(path: str | Path) -> Path:
    """Create (or empty) ``path`` as a 0600 file, for writers that open it by name later
    (``gzip.open``): opening an existing file keeps its mode."""
    open_private(path, "wb").close()
    return Path(path)


@contextlib.contextmanager
def private_writer(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` atomically with mode 0600.

    The content goes to a temporary file in the same folder (created 0600 by mkstemp) and is
    renamed over ``path`` only when the block finishes, so a crash never leaves a partial file
    that looks complete; file and folder are fsynced, so the new content survives a crash once
    the block is done. Missing folders are created 0700. The one atomic writer of the package.
    """
    path = Path(path)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    """fsync a folder, so a rename in it survives a crash too, not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)


def warn_if_exposed(path: str | Path, what: str) -> bool:
    """Log a warning (once per path) when group or others may access ``path``; change nothing.

    Returns whether it is exposed.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    if not mode & _OTHERS:
        return False
    key = os.path.abspath(path)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "%s %s is accessible to other users (mode %04o); it is left as it is: "
            "chmod %s it if they should not see it",
            what,
            path,
            mode,
            "700" if Path(path).is_dir() else "600",
        )
    return True


def prepare_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Check, before any work, that folder ``path`` can hold the outputs: create it (0700,
    parents too) and write a probe file in it. Raises :class:`OptionError` if it cannot.

    A folder that existed before keeps its mode; a warning says if others can read it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{option} {path}: exists and is not a folder")
    existed = path.is_dir()
    try:
        private_dir(path)
        fd, probe = tempfile.mkstemp(prefix=".fhir-cohort-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OptionError(f"{option} {path}: cannot create or write there ({reason})") from None
    if existed:
        warn_if_exposed(path, f"{option} folder")
    return path
