#!/bin/sh
# Install Debian's headless-capable Chromium for the report's browser test (tests/report).
# Idempotent: does nothing when the binary is already there. Installing needs root (CI,
# containers); Playwright drives this binary via executable_path, so `playwright install` (a
# download from Playwright's own servers, which need not be reachable) is never used.
#
# Without root the script installs nothing and exits 0: the browser tests then skip, saying
# why; under CI=true it fails instead, as those tests would (scripts/apt_install.sh).
# FHIR_COHORT_CHROMIUM overrides the binary's path (the browser tests read it too).
set -eu

CHROMIUM=${FHIR_COHORT_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

# A font too: without recommends a slim image may have none, and screenshots show boxes.
status=0
sh "$(dirname "$0")/apt_install.sh" install_browser.sh "$CHROMIUM (the browser tests)" \
    chromium fonts-dejavu-core || status=$?
[ "$status" -eq 3 ] && exit 0
[ "$status" -eq 0 ] || exit "$status"
"$CHROMIUM" --version
