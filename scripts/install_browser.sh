#!/bin/sh
# Install Debian's headless-capable Chromium for the report's browser test (tests/report).
# Idempotent: does nothing when the binary is already there. Installing needs root (CI,
# containers); Playwright drives this binary via executable_path, so `playwright install` (a
# download from Playwright's own servers, which need not be reachable) is never used.
#
# Without root the script installs nothing and exits 0: the browser tests then skip, saying
# why; under CI=true it fails instead, as those tests would.
# FHIR_COHORT_CHROMIUM overrides the binary's path (the browser tests read it too).
set -eu

CHROMIUM=${FHIR_COHORT_CHROMIUM:-/usr/bin/chromium}
# Another apt/dpkg (unattended-upgrades, a second make) may hold the lock: wait, bounded.
LOCK_WAIT_SECONDS=300
LOCK_POLL_SECONDS=5

if [ -x "$CHROMIUM" ]; then
    echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "install_browser.sh: $CHROMIUM is missing and installing it needs root (CI=true)" >&2
        exit 1
    fi
    echo "install_browser.sh: $CHROMIUM is missing and installing it needs root:" \
        "the browser tests will be skipped (run this script as root to include them)" >&2
    exit 0
fi

# `apt-get update` does not wait for the lists lock (DPkg::Lock::Timeout covers only the dpkg
# lock), so retry it while the failure is a held lock, up to LOCK_WAIT_SECONDS.
apt_update() {
    waited=0
    while :; do
        if out=$(apt-get -q update 2>&1); then
            printf '%s\n' "$out"
            return 0
        fi
        case $out in
            *"Could not get lock"* | *"Unable to lock"*) ;;
            *)
                printf '%s\n' "$out" >&2
                return 1
                ;;
        esac
        if [ "$waited" -ge "$LOCK_WAIT_SECONDS" ]; then
            printf '%s\n' "$out" >&2
            echo "install_browser.sh: the apt lock is still held after ${LOCK_WAIT_SECONDS}s;" \
                "is another apt-get or dpkg stuck? Run this script again when it is done" >&2
            return 1
        fi
        echo "install_browser.sh: another package manager holds the apt lock; waiting" \
            "(${waited}s of at most ${LOCK_WAIT_SECONDS}s)" >&2
        sleep "$LOCK_POLL_SECONDS"
        waited=$((waited + LOCK_POLL_SECONDS))
    done
}

export DEBIAN_FRONTEND=noninteractive
apt_update
# A font too: without recommends a slim image may have none, and screenshots show boxes.
# apt-get waits (printing "Waiting for cache lock") up to the timeout for the dpkg lock.
apt-get -q -o "DPkg::Lock::Timeout=$LOCK_WAIT_SECONDS" install -y --no-install-recommends \
    chromium fonts-dejavu-core
"$CHROMIUM" --version
