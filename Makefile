# SPDX-License-Identifier: GPL-2.0-or-later
# Entry points.  The scripts in tooling/ do the work; each one says what it
# does at its top.

SERIES := .work/series
DEV    := .work/qemu

.PHONY: help deps build check check-series check-asan fuzz demo bench tree devbuild export clean

help:
	@echo "make demo     build what is missing, then live-migrate a VM with the reference device"
	@echo "make check    apply the series to pristine upstream, check every patch, run every test"
	@echo "make bench    measure device-state migration against guest-RAM migration"
	@echo "make check-series  only the series checks of make check (apply, checkpatch, builds, view)"
	@echo "make check-asan  the device tests and vfio qtests in an ASan/UBSan build"
	@echo "make fuzz     run the two libFuzzer targets (FUZZ_SECONDS each, default 300)"
	@echo "make tree     make the developer's QEMU work tree $(DEV) (series as commits)"
	@echo "make devbuild build $(DEV)"
	@echo "make export   write $(DEV)'s series back to patches/ and refresh the view"

deps:
	tooling/deps.sh

build: deps
	tooling/mktree.sh $(SERIES)
	tooling/build.sh $(SERIES)

check:
	tooling/check.sh

check-series:
	CHECK_SERIES_ONLY=1 tooling/check.sh

check-asan:
	tooling/check-asan.sh

fuzz: build
	tooling/fuzz.sh --seconds $(or $(FUZZ_SECONDS),300)

demo: build
	tooling/demo.sh $(DEMO_ARGS)

bench: build
	tooling/bench.sh $(BENCH_ARGS)

tree: deps
	@if [ -d $(DEV)/.git ] && ! git -C $(DEV) diff --quiet HEAD --; then \
	    echo "$(DEV) has uncommitted changes; commit or discard them first" >&2; exit 1; fi
	MKTREE_FORCE=1 tooling/mktree.sh $(DEV)

devbuild:
	tooling/build.sh $(DEV)

export:
	tooling/export.sh $(DEV)

clean:
	rm -rf .work
