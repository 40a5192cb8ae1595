#!/usr/bin/env bash
# Packs the release build that is there (`make dist` builds it first;
# `make test` reuses the one `make e2e` built) into
# dist/opsdeck-VERSION-x86_64-linux.tar.gz: the binary carrying its site,
# the demo configuration and its scripts, the systemd units, INSTALL and
# the install and agent docs. Run from the checkout.
set -euo pipefail

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
bin="${CARGO_TARGET_DIR:-target}/release/opsdeck"
site=target/site
name="opsdeck-$version-x86_64-linux"
stage="dist/$name"

[ -x "$bin" ] || { echo "dist: no release build at $bin: run \`make dist\` (or \`cargo leptos build --release\`)" >&2; exit 1; }
[ -f "$site/pkg/opsdeck.wasm" ] || { echo "dist: no site in $site: run \`make dist\` (or \`cargo leptos build --release\`)" >&2; exit 1; }

rm -rf "$stage" "dist/$name.tar.gz"
mkdir -p "$stage/systemd" "$stage/doc"
# Strip first: stripping rewrites the ELF file and would drop an appended
# site. The stripped copy then writes the binary that carries the site.
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
strip -o "$stripped" "$bin"
"$stripped" embed-site --site "$site" --out "$stage/opsdeck"

cp examples/opsdeck.toml "$stage/opsdeck.toml"
cp -r examples/scripts "$stage/scripts"
cp packaging/systemd/*.service "$stage/systemd/"
cp packaging/INSTALL "$stage/INSTALL"
cp docs/install.md docs/agents.md "$stage/doc/"

# Reproducible: fixed owner, order and time (the commit's).
mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -C dist -czf "dist/$name.tar.gz" "$name"
rm -rf "$stage"
echo "dist/$name.tar.gz: $(du -k "dist/$name.tar.gz" | cut -f1) KiB, sha256 $(sha256sum "dist/$name.tar.gz" | cut -d' ' -f1)"
"$bin" --version
