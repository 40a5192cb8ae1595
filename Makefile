# opsdeck — the two commands are `make run` and `make test`; both do every
# set-up step first and skip what is already there.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Build output lives outside the clone so a fresh clone reuses it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/opsdeck/target
# cargo-leptos sets this while building; leptos reads it with option_env!, so
# plain cargo (tests, clippy) must see the same value or it rebuilds leptos.
export LEPTOS_OUTPUT_NAME := opsdeck
# Which checkout builds: server/build.rs stamps the binary with its commit
# again when this changes (the cache above is shared by every checkout).
export OPSDECK_CHECKOUT := $(CURDIR)
# npm's binaryen (wasm-opt 123) must come before any other wasm-opt.
export PATH := $(CURDIR)/vendor/node_modules/.bin:$(HOME)/.cargo/bin:$(PATH)

CARGO_LEPTOS_VERSION := 0.3.10
WASM_BINDGEN_VERSION := $(shell sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
E2E_DB_DIR := target/e2e
# Every cargo-leptos build splits the wasm (`--split`, a command-line flag
# only in 0.3.10): each page but the dashboard is a lazy route (app/src/
# routes.rs) whose code loads when the page is opened; every cargo-leptos
# build here passes it (bench/run.sh too).
LEPTOS_SPLIT := --split

.PHONY: help setup toolchain npm chromium restic build run test check fmt clippy cargo-test pg-clean e2e bench clean-e2e fuzz fuzz-setup dist dist-pack dist-test

help:
	@echo "make run    build and start opsdeck on http://127.0.0.1:3000 (demo configuration, SQLite under data/)"
	@echo "make test   run every check and test (fmt, clippy, cargo tests, Playwright in Chromium)"
	@echo "make dist   build the release tarball dist/opsdeck-VERSION-x86_64-linux.tar.gz (docs/install.md)"
	@echo "make bench  run the benchmarks (results in docs/benchmarks.md)"
	@echo "make fuzz   run each fuzz target for FUZZ_SECONDS (60) seconds (docs/fuzzing.md)"

# ---- set-up -------------------------------------------------------------------

setup: toolchain npm chromium restic

toolchain:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@cargo leptos --version 2>/dev/null | grep -qF "$(CARGO_LEPTOS_VERSION)" || \
	  { echo "installing cargo-leptos $(CARGO_LEPTOS_VERSION) (about 20 minutes)"; cargo install --locked cargo-leptos@$(CARGO_LEPTOS_VERSION); }
	@wasm-bindgen --version 2>/dev/null | grep -qF " $(WASM_BINDGEN_VERSION)" || \
	  { echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (about 3 minutes)"; cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); }

npm: vendor/node_modules/.installed end2end/node_modules/.installed public/vendor/xterm/xterm.mjs

vendor/node_modules/.installed: vendor/package.json vendor/package-lock.json
	npm ci --prefix vendor --no-audit --no-fund
	@touch $@

end2end/node_modules/.installed: end2end/package.json end2end/package-lock.json
	npm ci --prefix end2end --no-audit --no-fund
	@touch $@

# The front-end packages opsdeck serves itself (no CDN): copied from npm's
# install into the assets dir, which cargo-leptos copies into the site.
public/vendor/xterm/xterm.mjs: vendor/node_modules/.installed
	mkdir -p public/vendor/xterm
	cp vendor/node_modules/@xterm/xterm/lib/xterm.mjs vendor/node_modules/@xterm/xterm/css/xterm.css \
	   vendor/node_modules/@xterm/addon-fit/lib/addon-fit.mjs public/vendor/xterm/
	cp vendor/node_modules/@xterm/xterm/LICENSE public/vendor/xterm/LICENSE.txt
	@touch $@

chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# Debian's restic: examples/restic.toml runs it, and so does its test (server/tests/it/restic.rs).
restic:
	@command -v restic >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q restic; }

# ---- build and run ------------------------------------------------------------

build: setup
	cargo leptos build --release $(LEPTOS_SPLIT)

run: setup
	cargo leptos serve --release $(LEPTOS_SPLIT)

# ---- tests --------------------------------------------------------------------

test: setup check cargo-test e2e dist-test

check: fmt clippy

fmt:
	cargo fmt --all --check
	rustfmt --edition 2021 --check fuzz/fuzz_targets/*.rs

clippy:
	cargo clippy -p app -p server -p migration --all-targets --features app/ssr -- -D warnings
	cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings

# One invocation: app's tests get `ssr` through server, and nothing is built twice.
# Then the integration suite again with every server on PostgreSQL (a fresh
# database per server, on the machine's PostgreSQL 15: .ci/run starts it),
# named with the same packages so cargo unifies the same features and reuses
# the build (`-p server` alone would compile the server again).
cargo-test: pg-clean
	cargo test --release -p app -p migration -p server
	OPSDECK_TEST_DB=postgres cargo test --release -p app -p migration -p server --test it
	@$(MAKE) --no-print-directory pg-clean

# Test databases left behind: each is named opsdeck_{it,bin}_PID_N after the
# test process that made it; those of processes no longer running are dropped.
PSQL := psql -h 127.0.0.1 -U postgres -d test -qtA
pg-clean:
	@pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL is not running on 127.0.0.1:5432: start it (.ci/run does) with: pg_ctlcluster --skip-systemctl-redirect \$$(ls /etc/postgresql) main start"; exit 1; }
	@for db in $$($(PSQL) -c "SELECT datname FROM pg_database WHERE datname ~ '^opsdeck_(it|bin)_[0-9]+_'"); do \
	  pid=$$(echo "$$db" | cut -d_ -f3); [ -d /proc/$$pid ] && continue; \
	  $(PSQL) -c "DROP DATABASE IF EXISTS $$db WITH (FORCE)" >/dev/null; done

clean-e2e:
	rm -rf $(E2E_DB_DIR)

# cargo-leptos ends a failed run with its own backtrace; the names and errors
# of the failing tests are printed again after it, so the end of the output
# says what failed.
E2E_LOG := target/e2e.log

e2e: clean-e2e
	@mkdir -p target
	@echo "cargo leptos end-to-end --release $(LEPTOS_SPLIT) (output also in $(E2E_LOG))"
	@OPSDECK_CONFIG=end2end/opsdeck.e2e.toml OPSDECK_ADMIN_PASSWORD=e2e-admin-password RUST_LOG=warn \
	  cargo leptos end-to-end --release $(LEPTOS_SPLIT) 2>&1 | tee $(E2E_LOG) || { \
	  echo; echo "== Playwright failed; the failing tests (whole output: $(E2E_LOG)) =="; \
	  sed -n '/^  [0-9]*) \[chromium\]/,/^  [0-9]* passed/p' $(E2E_LOG) | grep -v '^ *at \|^$$' | head -60; \
	  exit 1; }

# ---- release ------------------------------------------------------------------

# The tarball: the release binary carrying its site (server/src/site),
# the demo configuration, the systemd units, INSTALL (packaging/).
dist: setup
	cargo leptos build --release $(LEPTOS_SPLIT)
	@$(MAKE) --no-print-directory dist-pack

# Packs the release build that is there, without building: in `make test`,
# the one `make e2e` just built.
dist-pack:
	packaging/dist.sh

# Unpacks the tarball and starts it elsewhere; Chromium checks it
# (packaging/test-dist.sh, end2end/dist/).
dist-test: dist-pack
	packaging/test-dist.sh

bench: setup
	./bench/run.sh

# ---- fuzzing (not part of `make test`; docs/fuzzing.md) ------------------------

# Seconds each target runs; which targets; libFuzzer's sanitizer (`none` is
# about twice as fast; `address` also checks the unsafe code of dependencies).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config ansi output params request_head
FUZZ_SANITIZER ?= none
# cargo-fuzz passes nightly-only flags to rustc; the stable toolchain takes
# them with RUSTC_BOOTSTRAP=1 (no nightly toolchain needed).
FUZZ := RUSTC_BOOTSTRAP=1 cargo fuzz

fuzz-setup:
	@cargo fuzz --version >/dev/null 2>&1 || \
	  { echo "installing cargo-fuzz (about 2 minutes)"; cargo install --locked cargo-fuzz; }

# New inputs go to fuzz/corpus/<target> (not committed); the hand-made seeds
# are read from fuzz/seeds/<target>. Each run's whole output is in
# fuzz/logs/<target>.log; a crash stops `make fuzz`, prints the end of the
# log and leaves the input under fuzz/artifacts/<target>/.
fuzz: fuzz-setup
	$(FUZZ) build -s $(FUZZ_SANITIZER) --target-dir fuzz/target
	@mkdir -p fuzz/logs
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz target $$t for $(FUZZ_SECONDS) s (log: fuzz/logs/$$t.log)"; \
	  mkdir -p fuzz/corpus/$$t; \
	  dict=; if [ -f fuzz/dicts/$$t.dict ]; then dict=-dict=fuzz/dicts/$$t.dict; fi; \
	  $(FUZZ) run -s $(FUZZ_SANITIZER) --target-dir fuzz/target $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $$dict \
	    > fuzz/logs/$$t.log 2>&1 || { tail -n 40 fuzz/logs/$$t.log; echo "fuzz target $$t failed"; exit 1; }; \
	  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' fuzz/logs/$$t.log; \
	done
