#!/bin/sh
# Install Debian's Java 17 runtime for the Spark engine's tests (tests/spark; PySpark itself
# comes from PyPI with the extra `spark`). Idempotent: does nothing when a java binary is
# there already. Installing needs root (CI, containers).
#
# Without root the script installs nothing and exits 0: the Spark tests then skip, saying
# why; under CI=true it fails instead, as those tests would.
# FHIR_COHORT_JAVA overrides the binary's path (JAVA_HOME/bin/java when set, else java on PATH).
set -eu

if [ -n "${FHIR_COHORT_JAVA:-}" ]; then
    JAVA=$FHIR_COHORT_JAVA
elif [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
    JAVA=$JAVA_HOME/bin/java
else
    JAVA=$(command -v java || echo /usr/bin/java)
fi
# Another apt/dpkg (unattended-upgrades, the browser install of the same make) may hold the
# lock: wait, bounded.
LOCK_WAIT_SECONDS=300
LOCK_POLL_SECONDS=5

if [ -x "$JAVA" ]; then
    echo "java already installed: $("$JAVA" -version 2>&1 | head -n 1)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "install_java.sh: java is missing and installing it needs root (CI=true)" >&2
        exit 1
    fi
    echo "install_java.sh: java is missing and installing it needs root:" \
        "the Spark tests will be skipped (run this script as root to include them)" >&2
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
            echo "install_java.sh: the apt lock is still held after ${LOCK_WAIT_SECONDS}s;" \
                "is another apt-get or dpkg stuck? Run this script again when it is done" >&2
            return 1
        fi
        echo "install_java.sh: another package manager holds the apt lock; waiting" \
            "(${waited}s of at most ${LOCK_WAIT_SECONDS}s)" >&2
        sleep "$LOCK_POLL_SECONDS"
        waited=$((waited + LOCK_POLL_SECONDS))
    done
}

export DEBIAN_FRONTEND=noninteractive
apt_update
# apt-get waits (printing "Waiting for cache lock") up to the timeout for the dpkg lock.
apt-get -q -o "DPkg::Lock::Timeout=$LOCK_WAIT_SECONDS" install -y --no-install-recommends \
    openjdk-17-jre-headless
"$JAVA" -version
