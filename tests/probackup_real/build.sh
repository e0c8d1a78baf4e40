#!/usr/bin/env bash
# Build the real pg_probackup 2.5.15 from ../shared/vendor into .build/probackup/ (once; cached), so the
# probackup tests can run against it as well as against the stand-in. pg_probackup is in no package
# registry reachable here; its source is. See ../shared/vendor/README.md for the facts this follows.
#
#   tests/probackup_real/build.sh [OUT_DIR]      prints the binary's path on the last line
#
# Exit 0 with "probackup-real: skipped: ..." when the vendored source is absent (a user's machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-.build/probackup}
VENDOR=../shared/vendor/pg_probackup-2.5.15.tar.gz
BIN=$OUT/pg_probackup-2.5.15/pg_probackup
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
if [ ! -f "$VENDOR" ]; then echo "probackup-real: skipped: $VENDOR is absent"; exit 0; fi

# The server headers and the source tree must be of the installed PostgreSQL 15, exactly: installing a newer
# -dev package would upgrade the server under a running lab.
ver=$(dpkg-query -W -f='${Version}' postgresql-15)
packages="postgresql-server-dev-15=$ver libpq-dev=$ver libpq5=$ver build-essential libssl-dev zlib1g-dev libreadline-dev liblz4-dev libzstd-dev libkrb5-dev libselinux1-dev libxslt1-dev libpam0g-dev dpkg-dev bzip2"
missing=""
for p in $packages; do
  name=${p%%=*}; want=${p#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  case "$have" in
    "install ok installed "*) [ "$p" = "$name" ] || [ "${have##* }" = "$want" ] || missing="$missing $p" ;;
    *) missing="$missing $p" ;;
  esac
done
src_list=/etc/apt/sources.list.d/pgdr-deb-src.sources
if [ ! -f "$src_list" ]; then
  cat > "$src_list" <<'SOURCES'
# added by pgdr.backup tests/probackup_real/build.sh: pg_probackup builds against the PostgreSQL source tree
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  updated=""
else
  updated=yes
fi
if [ -n "$missing" ] || [ -z "$updated" ]; then
  apt-get update -qq
fi
if [ -n "$missing" ]; then
  echo "probackup-real: installing$missing"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
upstream=${ver%%-*}
pgsrc=$OUT/postgresql-$upstream
if [ ! -f "$pgsrc/src/backend/access/transam/xlogreader.c" ]; then
  (cd "$OUT" && apt-get source -qq --download-only "postgresql-15=$ver" >/dev/null)
  tar -xjf "$OUT/postgresql-15_${upstream}.orig.tar.bz2" -C "$OUT"
fi
rm -rf "$OUT/pg_probackup-2.5.15"
tar -xzf "$VENDOR" -C "$OUT"
args=(USE_PGXS=1 PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config "top_srcdir=$pgsrc")
# the Makefile symlinks these headers without declaring them: make them first, or -j2 races
make -s -C "$OUT/pg_probackup-2.5.15" "${args[@]}" src/receivelog.h src/streamutil.h src/instr_time.h src/walmethods.h >/dev/null
make -s -j2 -C "$OUT/pg_probackup-2.5.15" "${args[@]}" >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
"$BIN" version
echo "$BIN"
