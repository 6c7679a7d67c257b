#!/usr/bin/env bash
# The console's browser tests drive Debian's Chromium through Playwright (Playwright's own
# browser download cannot work offline). Install the distribution package when it is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "chromium is missing: install it with 'sudo apt-get install -y chromium' (browser tests will skip)" >&2
  exit 0
fi
echo "installing Debian's chromium for the browser tests…"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
