#!/usr/bin/env bash
# Install what the PostgreSQL multi-worker search test needs (tests/passes/search/test_search_postgres.py):
# Debian's `postgresql` server binaries and psycopg2-binary. Idempotent; safe to call from .ci/run.
#   bash .ci/postgres.sh          # install only
#   bash .ci/postgres.sh --test   # install, then run the test (-m postgres)
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg() {
    command -v initdb >/dev/null 2>&1 && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! have_pg; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # the server package only: the test starts a throwaway cluster itself (no system service needed)
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # Debian's package starts a cluster on port 5432 where a service manager exists; the test
    # does not use it
fi
have_pg || { echo ".ci/postgres.sh: PostgreSQL binaries still missing after apt-get install" >&2; exit 1; }

python3 -c "import psycopg2" 2>/dev/null || python3 -m pip install --quiet "psycopg2-binary>=2.9"

if [ "${1:-}" = "--test" ]; then
    python3 -m pytest -q -p no:xdist -m postgres tests/passes/search
fi
