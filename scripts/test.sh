#!/usr/bin/env bash
# Install everything the tests need (pip packages and Debian's chromium for the browser test), then run the
# whole test suite. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k history`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian chromium for the browser tests"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing Debian postgresql for the shared-backend tests (a throwaway server: tests/pgserver.py)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

echo "== installing Python packages (requirements-dev.txt)"
"$PYTHON" -m pip install --disable-pip-version-check -q -r requirements-dev.txt

echo "== ruff"
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .

echo "== import-linter (the layers: pyproject.toml [tool.importlinter])"
lint-imports --no-cache

echo "== pytest (two workers, one test file each at a time, the longest files first: pytest-xdist, tests/conftest.py)"
exec "$PYTHON" -m pytest -n "${VISIONQC_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
