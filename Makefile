# Set-up and entry points. `make demo` and `make test` each do all of their own set-up on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
LOCK := requirements/lock.txt
# The venv lives outside the clone, keyed by the lock file, so a fresh clone (CI) reuses it.
LOCK_HASH := $(shell sha256sum $(LOCK) | cut -c1-16)
VENV ?= $(HOME)/.cache/action-recognition/venv-$(LOCK_HASH)
BIN := $(VENV)/bin
SYSTEM_PACKAGES := ffmpeg docker.io debootstrap docker-compose chromium
DEMO_DIR ?= $(CURDIR)/.demo
PYTEST_ARGS ?=

export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help system venv lock update-yt-dlp smoke-online test test-fast check reliability demo bench clean stack-images stack-up stack-down

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

system:  ## Debian packages (ffmpeg, docker.io, debootstrap, docker-compose, chromium), installed only when missing
	@scripts/install-system.sh $(SYSTEM_PACKAGES)

# No prerequisite on the lock file: the venv's path already holds the lock's hash, and a fresh clone's files are
# all newer than any venv, which would rebuild it every time.
# pip's own output (and this machine's pip configuration's notices) go to $(VENV).log, one line per stage here.
$(BIN)/.complete:
	@echo "building $(VENV) from $(LOCK) (log: $(VENV).log)"
	@rm -rf $(VENV) $(VENV).log
	@scripts/quietly.sh "  creating the venv" $(VENV).log $(PYTHON) -m venv $(VENV)
	@# Every file checked against the lock's sha256 (pip, setuptools and wheel included); see scripts/lock.py.
	@# The locked pip first: the one `python -m venv` bundles (23.2 with Python 3.11.7) resolves an extra of a pinned
	@# package (the Celery provider's celery[redis]) to the newest release instead of the pin, and --require-hashes
	@# then refuses the whole install.
	@sed -n '/^pip==/,/[^\\]$$/p' $(LOCK) > $(VENV)/lock-pip.txt
	@scripts/quietly.sh "  installing the locked pip (hash-checked)" $(VENV).log \
	  $(BIN)/pip install --require-hashes -r $(VENV)/lock-pip.txt
	@scripts/quietly.sh "  installing the locked packages (hash-checked)" $(VENV).log \
	  $(BIN)/pip install --require-hashes -r $(LOCK)
	@touch $@

venv: $(BIN)/.complete  ## The project venv (reused while the lock file is unchanged), with this clone installed
	@want="$(CURDIR) $$(sha256sum pyproject.toml | cut -c1-16)"; \
	if [ "$$(cat $(VENV)/.source 2>/dev/null)" != "$$want" ]; then \
	  scripts/quietly.sh "  installing this clone (editable)" $(VENV).log \
	    $(BIN)/pip install --no-deps --no-build-isolation -e . && echo "$$want" > $(VENV)/.source; \
	fi

lock: venv  ## Re-pin requirements/lock.txt from this venv, every pin with its sha256
	$(BIN)/python scripts/lock.py --freeze

update-yt-dlp: venv  ## Keep up with YouTube: newest yt-dlp (+ the EJS scripts and deno it needs) in the lock, a fresh venv, the acquisition tests
	$(BIN)/python scripts/lock.py --bump 'yt-dlp[default,deno]'
	$(MAKE) venv
	$(MAKE) test PYTEST_ARGS="tests/unit/test_download_classify.py tests/integration/test_acquisition.py tests/integration/test_doctor.py"
	@echo "lock bumped: commit requirements/lock.txt; images pick it up at their next build (make stack-up, docker compose build)"

# Two lanes, one pytest-xdist worker each: what drives the Docker engine, and the rest (tests/conftest.py).
test: system venv  ## Every real component proven once, in two lanes (starts a Docker engine only if none runs)
	scripts/dockerd.sh run $(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-fast: venv  ## The inner loop: unit, DAG, data and model tiers, operators with a spec'd Docker client (<2 min)
	$(BIN)/python -m pytest tests/unit tests/dags tests/data tests/model -m "not dagrun and not check" $(PYTEST_ARGS)

check: venv  ## ruff (rules, format), mypy, the code-shape and DAG-integrity tests (<1 min)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m check tests/unit tests/dags $(PYTEST_ARGS)

reliability: system venv  ## The fault, bad-input and security suites, ending with one block of figures
	AR_RELIABILITY_REPORT=$(CURDIR)/.reliability.json scripts/dockerd.sh run \
	  $(BIN)/python -m pytest -m reliability $(PYTEST_ARGS)


demo: system venv  ## The whole DAG on the embedded defaults, offline (airflow dags test), into $(DEMO_DIR)
	$(BIN)/python -m devtools demo --workdir $(DEMO_DIR) --videos tests/fixtures/videos

smoke-online: system venv  ## A networked machine's first real run: K700 CSV, 3 classes x 3 clips from YouTube, real weights, real training
	$(BIN)/python -m devtools smoke --workdir .smoke

bench: system venv  ## Speed and bytes figures against baselines measured in the same run
	$(BIN)/python -m benchmarks.bench_download
	$(BIN)/python -m benchmarks.bench_train
	$(BIN)/python -m benchmarks.bench_pose
	$(BIN)/python -m benchmarks.bench_decode_read
	$(BIN)/python -m benchmarks.bench_parse
	$(BIN)/python -m benchmarks.bench_serving
	$(BIN)/python -m benchmarks.bench_health
	$(BIN)/python -m benchmarks.bench_mlflow_auth

stack-images: system venv  ## Build every image of the compose stack here, pulling nothing (scripts/stack-images.sh)
	scripts/dockerd.sh start
	VENV=$(VENV) scripts/stack-images.sh

stack-up: system venv  ## The compose stack with local images: .env with generated secrets, up, healthy, URLs (CELERY_WORKERS=2: Celery)
	VENV=$(VENV) scripts/stack.sh up

stack-down:  ## Stop the stack; CLEAN=1 also removes its volumes and the images it built
	scripts/stack.sh down

clean:  ## Remove the demo output (the shared venv stays)
	rm -rf $(DEMO_DIR)
