"""`python -m fhir_cohort` runs the CLI."""

import sys

from fhir_cohort.cli import main

sys.exit(main())
