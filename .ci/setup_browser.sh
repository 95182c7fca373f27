#!/usr/bin/env bash
# Installs Debian's headless Chromium and its matching chromedriver for the end-to-end app test, when missing.
# Safe to run repeatedly; it needs root (CI and the dev machines run as root) and does nothing if both exist.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup_browser.sh: not root and no sudo; install chromium and chromium-driver by hand" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromium && command -v chromedriver
