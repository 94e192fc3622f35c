#!/usr/bin/env bash
# Install what is missing, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The real-browser test needs Debian's chromium; install it when we can (root + apt).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium for the browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the browser test will skip"
fi
# The engine's layers: an upward import or a cycle fails here (docs/architecture.md).
.venv/bin/lint-imports --no-logo --no-cache
exec .venv/bin/python -m pytest -q -ra tests "$@"
