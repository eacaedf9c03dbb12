#!/usr/bin/env bash
# Installs Debian's chromium for tests/test_browser.py (Playwright drives it via
# executable_path=/usr/bin/chromium; Playwright never downloads a browser here).
# Idempotent and quiet: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser.sh: no apt-get here; install chromium yourself (tests/test_browser.py will skip)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "install_browser.sh: not root and no sudo; chromium not installed (tests/test_browser.py will skip)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium >/dev/null; }; then
  echo "install_browser.sh: apt-get install chromium failed (tests/test_browser.py will skip)" >&2
fi
