# The project's commands. README's two commands are `make demo` and `make test`; .ci/run runs `make test`.
PYTHON ?= python3
# clang + libclang-rt-dev: the compiler and its runtimes (libFuzzer, sanitizers) for the fuzz build;
# prometheus: a real Prometheus server that scrapes the exporter in tests/test_prometheus_server.py
SYSTEM_PACKAGES := gcc clang libclang-rt-dev cppcheck prometheus
APT_MISSING = $(shell for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)

.PHONY: system-deps install test bench demo matrix matrix-deps fuzz soak

# Debian packages the tests need (compilers for the layout check, sanitizer and fuzz builds).
system-deps:
	@if [ -n "$(strip $(APT_MISSING))" ]; then \
		echo "installing $(APT_MISSING)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_MISSING); \
	fi

install:
	$(PYTHON) -m pip install -q -e '.[test]'

test: system-deps install
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) -m pytest bench --benchmark-enable -p no:cacheprovider

# Install, record every task that exits for 10 seconds into the Parquet dataset ./exits/ (needs
# root), then summarise it. A few hundred short commands run meanwhile so that an idle machine
# has exits to show; everything else that exits on the machine is recorded too.
demo:
	@command -v cc >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc)
	$(PYTHON) -m pip install -q -e '.[pandas,arrow]'
	@(sleep 2; for i in $$(seq 300); do ls / >/dev/null; sh -c 'exit 3'; done) &
	taskstats-fast record --seconds 10 -o exits
	taskstats-fast summary exits

# The kernel tests under Debian 6.1 (struct v13), 6.12 (v14), this kernel and a 64-CPU guest (qemu, no KVM:
# takes a while); prints a table. Must pass before a release.
matrix-deps:
	@command -v qemu-system-x86_64 >/dev/null && command -v depmod >/dev/null && command -v cpio >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 kmod cpio)

matrix: install matrix-deps
	bash tests/kernels/run_matrix.sh -p "$$($(PYTHON) -c 'import sys; print(sys.executable)')"

# Coverage-guided fuzzing of the C parser (libFuzzer + ASan/UBSan), one process per core; the
# corpus grows in /tmp/tsf_fuzz between runs. `make test` runs a bounded version of it.
FUZZ_SECONDS ?= 600
fuzz: system-deps install
	$(PYTHON) tests/fuzz/run_fuzz.py $(FUZZ_SECONDS) --jobs $$(nproc)

# The exit stream under continuous fork/exit load for SOAK_SECONDS: RSS, fds and loss every 10 s
# (needs root; figures in README's Soak section).
SOAK_SECONDS ?= 600
soak: install
	$(PYTHON) bench/soak.py --seconds $(SOAK_SECONDS)
