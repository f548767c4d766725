"""Moved to :mod:`fhir_cohort.files` (``fhir/`` writes private files too and must not import
``report/``); kept so existing imports work."""

from fhir_cohort.files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    open_private,
    prepare_out_dir,
    private_dir,
    private_file,
    private_writer,
    warn_if_exposed,
)

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
