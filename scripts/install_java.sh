#!/bin/sh
# Install Debian's Java 17 runtime for the Spark engine's tests (tests/spark; PySpark itself
# comes from PyPI with the extra `spark`). Idempotent: does nothing when a java binary is
# there already. Installing needs root (CI, containers).
#
# Without root the script installs nothing and exits 0: the Spark tests then skip, saying
# why; under CI=true it fails instead, as those tests would (scripts/apt_install.sh).
# FHIR_COHORT_JAVA overrides the binary's path (JAVA_HOME/bin/java when set, else java on PATH).
set -eu

if [ -n "${FHIR_COHORT_JAVA:-}" ]; then
    JAVA=$FHIR_COHORT_JAVA
elif [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
    JAVA=$JAVA_HOME/bin/java
else
    JAVA=$(command -v java || echo /usr/bin/java)
fi

if [ -x "$JAVA" ]; then
    echo "java already installed: $("$JAVA" -version 2>&1 | head -n 1)"
    exit 0
fi

status=0
sh "$(dirname "$0")/apt_install.sh" install_java.sh "java (the Spark tests)" \
    openjdk-17-jre-headless || status=$?
[ "$status" -eq 3 ] && exit 0
[ "$status" -eq 0 ] || exit "$status"
"$JAVA" -version
