"""The server launcher is a helper module, not tests: keep --doctest-modules from importing it
as a top-level ``sekmet`` module (that name belongs to the installed sekmet-fhir package)."""

collect_ignore_glob = ["*.py"]
