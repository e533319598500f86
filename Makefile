# The two set-up commands of the README. Both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# DeepSpeed JIT-builds a CPU op on first use; keep the build in the checkout, not a shared cache.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.torch_extensions
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: test lint demo venv system-deps clean

venv: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build (DEVELOPERS.md).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,mpi]'
	touch $(STAMP)

# System packages the launcher tests run for real: OpenMPI (mpirun), Slurm and munge, and for the nodes of
# tests/multinode/cluster.sh iproute2 (namespaces, veths, the bridge), an sshd and pdsh (mpirun and the
# deepspeed runner reach the other nodes over ssh; slim images lack even `ip`). Installed when missing and
# we are root on a Debian-like machine; otherwise the tests that need them say what to install.
SYSTEM_PACKAGES = openmpi-bin libopenmpi-dev slurm-wlm munge openssh-server pdsh iproute2
system-deps:
	@if ! command -v mpirun >/dev/null 2>&1 || ! command -v slurmctld >/dev/null 2>&1 || ! [ -x /usr/sbin/munged ] \
	  || ! [ -x /usr/sbin/sshd ] || ! command -v pdsh >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(SYSTEM_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "warning: install $(SYSTEM_PACKAGES) for the mpirun and Slurm tests"; fi; \
	fi

# ruff's lint and format check (configured in pyproject.toml): seconds, so it runs first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Three nodes (network namespaces with an sshd and a slurmd each, slurmctld beside them: a real multi-node
# Slurm) run for the duration of the tests and are removed by name and PID afterwards, pass or fail.
# Without root (namespaces, munge), or where the start fails, the multi-node tests skip locally; under
# CI=true a failed start stops `make test` at once.
test: lint $(STAMP) system-deps
	@if [ "$$(id -u)" = 0 ]; then tests/multinode/cluster.sh start 3 || [ -z "$$CI" ]; fi
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ -f .multinode/nodes ]; then tests/multinode/cluster.sh stop; fi; exit $$rc

demo: $(STAMP)
	$(PY) -m ligo_ds.commands.demo --out demo

clean:
	rm -rf demo .pytest_cache
