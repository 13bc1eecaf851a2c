# mmq: `make demo` runs remix on the embedded local stack; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The model hub is never needed (tests and the demo use tiny local models): fail fast if touched.
export HF_HUB_OFFLINE := 1

.PHONY: install system-deps demo test up down clean

install: $(VENV)/.installed

# torch first and pinned: it is the CPU wheel on our machines; a looser requirement met on a
# machine without torch would pull a multi-GB CUDA build. GPU hosts install their own torch.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[workers,stack,dev]'
	touch $@

# Debian packages the tests use: docker-compose (validates docker-compose.yml; no engine needed)
# and espeak-ng (speaks the sentences that the speech tests transcribe).
system-deps:
	@missing=""; command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install the Debian packages:$$missing" >&2; exit 1; fi; \
	fi

demo: install
	$(BIN)/mmq demo

test: install system-deps
	$(BIN)/python -m pytest -q --durations=15

up: install
	$(BIN)/mmq up

down:
	$(BIN)/mmq down

clean:
	-$(BIN)/mmq down
	rm -rf $(VENV) .mmq *.egg-info
