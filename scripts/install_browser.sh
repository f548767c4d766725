#!/bin/sh
# Install Debian's headless-capable Chromium for the report's browser test (tests/report).
# Idempotent: does nothing when /usr/bin/chromium is already there. Run as root (CI, containers);
# Playwright drives this binary via executable_path, so `playwright install` is never needed.
set -eu

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser.sh: $CHROMIUM is missing and installing it needs root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# A font too: without recommends a slim image may have none, and screenshots show boxes.
apt-get install -y --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version
