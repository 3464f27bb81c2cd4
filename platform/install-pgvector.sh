#!/usr/bin/env bash
# Installs the pgvector extension into this machine's PostgreSQL 15 and enables it in
# template1 (so every test database created from it has it) and in the flowdeck database.
#
# Idempotent: when PostgreSQL already offers a `vector` extension it only enables it.
# Run as root on the machine that runs PostgreSQL (the Makefile's `pgvector` target and
# .ci/run call it for a local database). Connection: PGHOST, PGPORT, PGUSER, PGPASSWORD
# (default 127.0.0.1:5432, postgres); PGVECTOR_DATABASES lists where to enable it. In production the database administrator installs
# pgvector >= 0.5 (HNSW indexes) and the app enables it; see the README.
#
# Why a source build: Debian bookworm ships no pgvector package for PostgreSQL 15 (and the
# 0.4.x of older suites has no HNSW), so we build 0.8.0 from Debian's own source tarball
# (the orig tarball of trixie's postgresql-*-pgvector), checked against a pinned sha256.
#
# `install-pgvector.sh --if-local` (what `make test`/`make run` call) reads DATABASE_URL and
# does nothing without one (the embedded default: SQLite), says what the administrator must
# do for a database on another machine, and says what to run when it is not root.
set -euo pipefail

if [ "${1:-}" = "--if-local" ]; then
    # host port user password database of a postgres:// DATABASE_URL, else nothing
    parts="$(python3 - <<'PY'
import os, shlex, urllib.parse as up
url = up.urlparse(os.environ.get("DATABASE_URL", ""))
if url.scheme in {"postgres", "postgresql", "pgsql"}:
    print(shlex.join([url.hostname or "localhost", str(url.port or 5432), up.unquote(url.username or "postgres"),
                      up.unquote(url.password or ""), url.path.lstrip("/") or "postgres"]))
PY
)"
    [ -n "$parts" ] || exit 0
    eval "set -- $parts"
    case "$1" in
        127.0.0.1|localhost|::1) ;;
        *) echo "pgvector: the database at $1 is not on this machine: its administrator installs pgvector >= 0.5 there (see the README)"
           exit 0 ;;
    esac
    if [ "$(id -u)" != 0 ]; then
        echo "pgvector: for the local PostgreSQL run once: sudo DATABASE_URL='<your url>' bash $0 --if-local"
        exit 0
    fi
    export PGHOST="$1" PGPORT="$2" PGUSER="$3"
    [ -z "$4" ] || export PGPASSWORD="$4"
    PGVECTOR_DATABASES="template1 $5"
fi

PGVECTOR_VERSION=0.8.0
PGVECTOR_SHA256=867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
PGVECTOR_URL="http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_${PGVECTOR_VERSION}.orig.tar.gz"
PG_MAJOR="${PG_MAJOR:-15}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
DATABASES="${PGVECTOR_DATABASES:-template1 flowdeck}"
export PGHOST PGPORT PGUSER
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"

psql_q() { psql -X -v ON_ERROR_STOP=1 -tAq "$@"; }

available() {
    [ "$(psql_q -d postgres -c "SELECT 1 FROM pg_available_extensions WHERE name='vector'")" = 1 ]
}

build_from_source() {
    if [ "$(id -u)" != 0 ]; then
        echo "install-pgvector: PostgreSQL has no 'vector' extension and this is not root;" >&2
        echo "  run: sudo $0" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! dpkg -s "postgresql-server-dev-${PG_MAJOR}" make gcc curl ca-certificates >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq "postgresql-server-dev-${PG_MAJOR}" make gcc curl ca-certificates >/dev/null
    fi
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    curl -sSfL -o "$work/pgvector.tar.gz" "$PGVECTOR_URL"
    echo "${PGVECTOR_SHA256}  $work/pgvector.tar.gz" | sha256sum -c --quiet -
    tar -xzf "$work/pgvector.tar.gz" -C "$work"
    local src
    src="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
    # OPTFLAGS="": no -march=native, so the built library runs on any x86-64 this disk moves to.
    make -s -C "$src" OPTFLAGS="" PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" >/dev/null
    make -s -C "$src" OPTFLAGS="" PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" install >/dev/null
    echo "install-pgvector: built and installed pgvector ${PGVECTOR_VERSION}"
}

if ! available; then
    build_from_source
    available || { echo "install-pgvector: 'vector' still not available after the build" >&2; exit 1; }
fi

enabled=()
for db in $DATABASES; do
    # A database that does not exist yet is created from template1 later, and so has it.
    exists="$(echo "SELECT 1 FROM pg_database WHERE datname = :'db'" | psql_q -d postgres -v db="$db")"
    if [ "$exists" = 1 ]; then
        psql_q -d "$db" -c "CREATE EXTENSION IF NOT EXISTS vector"
        enabled+=("$db")
    fi
done
version="$(psql_q -d postgres -c "SELECT default_version FROM pg_available_extensions WHERE name='vector'")"
echo "install-pgvector: pgvector ${version} enabled in: ${enabled[*]:-(no database)}"
