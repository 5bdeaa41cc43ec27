#!/usr/bin/env bash
# cargo deny check: licenses, bans and sources (deny.toml), and advisories against the RustSec
# snapshot beside the checkout (../shared/advisory-db, or $RUSTSEC_SNAPSHOT), offline: no
# machine here can fetch the live database. cargo-deny opens a database as a git clone in
# target/advisory-db named after its URL, so the snapshot becomes one commit there, dated
# as the snapshot. A finding fails unless deny.toml names it and says why.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version=0.20.2
snapshot="${RUSTSEC_SNAPSHOT:-$root/../shared/advisory-db}"
# The directory cargo-deny $version derives from deny.toml's db-urls.
db="$root/target/advisory-db/advisory-db-3157b0e258782691"

if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $version" ]; then
  echo "deny: installing cargo-deny $version" >&2
  cargo install --locked --quiet "cargo-deny@$version"
fi
[ -f "$snapshot/SNAPSHOT" ] || { echo "deny: no RustSec snapshot at $snapshot (set RUSTSEC_SNAPSHOT to a copy of rustsec/advisory-db)" >&2; exit 1; }
echo "deny: advisories as of: $(head -1 "$snapshot/SNAPSHOT")"
date="$(grep -oE '\(([0-9]{4}-[0-9]{2}-[0-9]{2})\)' "$snapshot/SNAPSHOT" | head -1 | tr -d '()')"
stamp="$root/target/advisory-db/.snapshot"
if [ ! -f "$stamp" ] || ! cmp -s "$stamp" "$snapshot/SNAPSHOT"; then
  rm -rf "$db"
  mkdir -p "$db"
  cp -r "$snapshot/." "$db/"
  (
    cd "$db"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
      git -c user.name=rustsec-snapshot -c user.email=snapshot@localhost commit -qm "snapshot $date"
  )
  cp "$snapshot/SNAPSHOT" "$stamp"
fi
# Every platform's crates, for cargo metadata (the check itself runs offline).
cargo fetch --locked --quiet
cargo deny --offline --locked check
