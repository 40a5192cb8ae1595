#!/usr/bin/env bash
# The release tarball as a new user meets it (`make dist-test`, part of
# `make test`): unpack it into a temporary directory, check the version and
# the systemd units, start the binary from another working directory with a
# fresh database and no site on disk, check an asset's name, encoding and
# caching, and let Chromium check that the dashboard hydrates and a job
# streams (end2end/dist/). Run from the checkout, after packaging/dist.sh.
set -euo pipefail

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
name="opsdeck-$version-x86_64-linux"
tarball="$PWD/dist/$name.tar.gz"
[ -f "$tarball" ] || { echo "dist-test: no $tarball: run \`make dist\`" >&2; exit 1; }

tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "dist-test: FAILED: $*" >&2; [ -f "$tmp/server.log" ] && tail -n 30 "$tmp/server.log" >&2; exit 1; }

tar -xzf "$tarball" -C "$tmp"
pkg="$tmp/$name"
for f in opsdeck opsdeck.toml scripts/demo-backup.sh systemd/opsdeck.service systemd/opsdeck-agent.service INSTALL doc/install.md; do
  [ -e "$pkg/$f" ] || fail "the tarball has no $f"
done

# --version: the version and the commit this checkout is at.
got=$("$pkg/opsdeck" --version)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[ "$got" = "opsdeck $version (commit $commit)" ] || fail "--version says \`$got\`, expected \`opsdeck $version (commit $commit)\`"
echo "ok: $got"

# The units, with ExecStart pointing at the unpacked binary (verify wants
# an executable there).
if command -v systemd-analyze >/dev/null; then
  mkdir "$tmp/units"
  for u in "$pkg"/systemd/*.service; do
    sed "s#/usr/local/bin/opsdeck#$pkg/opsdeck#" "$u" > "$tmp/units/$(basename "$u")"
  done
  out=$(systemd-analyze verify "$tmp"/units/*.service 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
  echo "ok: systemd-analyze verify passes both units"
else
  echo "skipped: systemd-analyze is not installed here, so the units were not verified"
fi

# Start it elsewhere: a working directory with nothing in it, a fresh
# database, no site directory, only the tarball's own configuration.
mkdir "$tmp/elsewhere"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
(cd "$tmp/elsewhere" && exec env -i PATH=/usr/bin:/bin HOME="$tmp/elsewhere" RUST_LOG=warn \
   OPSDECK_ADMIN_PASSWORD=e2e-admin-password \
   DATABASE_URL="sqlite://$tmp/elsewhere/fresh/opsdeck.db" \
   "$pkg/opsdeck" --config "$pkg/opsdeck.toml" serve --addr "127.0.0.1:$port") > "$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "the server exited"
  sleep 0.2
done
curl -fsS "$base/healthz" >/dev/null || fail "the server did not answer /healthz within 20 s"
[ -z "$(ls "$tmp/elsewhere" | grep -v '^fresh$')" ] || fail "the server wrote into its working directory: $(ls "$tmp/elsewhere")"

# The wasm: linked by a content-hashed name, served brotli-compressed to
# a client that accepts it, cacheable for a year.
wasm=$(curl -fsS "$base/login" | grep -o '/pkg/opsdeck\.[0-9a-f]\{16\}\.wasm' | head -n1)
[ -n "$wasm" ] || fail "the sign-in page links no hashed wasm"
headers=$(curl -fsS -o "$tmp/wasm.br" -D - -H 'accept-encoding: gzip, br' "$base$wasm" | tr -d '\r')
grep -qi '^content-encoding: br$' <<<"$headers" || fail "$wasm is not brotli: $headers"
grep -qi '^cache-control: public, max-age=31536000, immutable$' <<<"$headers" || fail "$wasm is not immutable: $headers"
echo "ok: $wasm is brotli ($(stat -c %s "$tmp/wasm.br") bytes) and immutable"

echo "Playwright against the unpacked binary at $base"
(cd end2end && OPSDECK_BASE_URL="$base" npx playwright test --config playwright.dist.config.ts) || fail "Playwright"
echo "dist-test: passed"
