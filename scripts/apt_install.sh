#!/bin/sh
# Install Debian packages for a test prerequisite, as install_browser.sh and install_java.sh
# need them (one copy of the root check and of the apt lock wait).
#
#   apt_install.sh CALLER WHAT PACKAGE...
#
# CALLER names the calling script in messages, WHAT the tests that need the packages.
# Exit status: 0 installed; 1 failed (a held lock past LOCK_WAIT_SECONDS, no root under
# CI=true, apt-get's own failure); 3 not root outside CI: nothing installed, the tests skip
# (the caller then exits 0).
set -eu

CALLER=$1
WHAT=$2
shift 2
# Another apt/dpkg (unattended-upgrades, the other install script of the same make) may hold
# the lock: wait, bounded.
LOCK_WAIT_SECONDS=300
LOCK_POLL_SECONDS=5

if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "$CALLER: $WHAT is missing and installing it needs root (CI=true)" >&2
        exit 1
    fi
    echo "$CALLER: $WHAT is missing and installing it needs root:" \
        "its tests will be skipped (run $CALLER as root to include them)" >&2
    exit 3
fi

# `apt-get update` does not wait for the lists lock (DPkg::Lock::Timeout covers only the dpkg
# lock), so retry it while the failure is a held lock, up to LOCK_WAIT_SECONDS.
waited=0
while :; do
    if out=$(apt-get -q update 2>&1); then
        printf '%s\n' "$out"
        break
    fi
    case $out in
        *"Could not get lock"* | *"Unable to lock"*) ;;
        *)
            printf '%s\n' "$out" >&2
            exit 1
            ;;
    esac
    if [ "$waited" -ge "$LOCK_WAIT_SECONDS" ]; then
        printf '%s\n' "$out" >&2
        echo "$CALLER: the apt lock is still held after ${LOCK_WAIT_SECONDS}s;" \
            "is another apt-get or dpkg stuck? Run $CALLER again when it is done" >&2
        exit 1
    fi
    echo "$CALLER: another package manager holds the apt lock; waiting" \
        "(${waited}s of at most ${LOCK_WAIT_SECONDS}s)" >&2
    sleep "$LOCK_POLL_SECONDS"
    waited=$((waited + LOCK_POLL_SECONDS))
done

export DEBIAN_FRONTEND=noninteractive
# apt-get waits (printing "Waiting for cache lock") up to the timeout for the dpkg lock.
apt-get -q -o "DPkg::Lock::Timeout=$LOCK_WAIT_SECONDS" install -y --no-install-recommends "$@"
