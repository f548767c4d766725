"""The FHIR side of fhir-cohort, a small library of its own: it knows nothing about criteria.

- ``wire``, ``references``, ``resource_types``: pure helpers (dates, tokens, references);
- ``ndjson``: the one NDJSON reader and writer; ``sources``: resources from files on disk;
- ``client``: the HTTP client in three layers (send, re-authenticate, retry); ``auth``: what
  goes in its Authorization header; ``search``: queries and paging;
- ``capability``, ``server_profile``, ``probe``: what a server says and really does;
- ``fetch`` (REST searches into a snapshot), ``crawl`` (a patient list, searched per patient,
  into the same snapshot) and ``bulk`` (Bulk Data ``$export``).

Progress goes to a :class:`fhir_cohort.progress.Progress` callback; files are written through
:mod:`fhir_cohort.files`; errors come from :mod:`fhir_cohort.errors`.
"""
