#!/usr/bin/env bash
# Makes Debian's Chromium available for the browser test (tests/e2e/test_ui_trigger.py), once.
#
# Why Debian's package: Playwright's own browser download needs the internet; the distribution's
# Chromium comes from the package registry and Playwright drives it through executable_path.
# Without root or sudo it only says what to install; the browser test then fails with that message.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium not found and no apt-get here: install Chromium at /usr/bin/chromium for the browser test." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "Chromium not found: run 'sudo apt-get install -y chromium' for the browser test." >&2
    exit 0
  fi
fi
echo "installing Debian's chromium for the browser test ..."
$SUDO apt-get update -q >/dev/null
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
command -v chromium
