# Edge portability harness. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HARNESS := $(VENV)/bin/harness
TARGET ?= local
MODEL ?= digits_cnn
# Your own model file instead of a recipe: make profile MODEL_FILE=det.onnx DATA=eval.npz SHAPES="images=1x3x640x640"
MODEL_FILE ?=
DATA ?=
SHAPES ?=
VARIANTS ?=
ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: help venv system-deps profile test nightly farm-up farm-down gate bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(STAMP): requirements.txt constraints.txt setup.cfg
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, exactly the CPU build on disk; never let pip choose torch freely.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	@# the editable install's build warnings are noise; show them only if it fails
	@$(PY) -m pip install -q --no-deps -e . > $(VENV)/editable-install.log 2>&1 || { cat $(VENV)/editable-install.log; exit 1; }
	@touch $(STAMP)

EXTRAS ?=
venv: $(STAMP) ## create the virtual environment (.venv) if missing or stale; EXTRAS=distributed adds an extra
	@$(if $(EXTRAS),$(PY) -m pip install -q -e '.[$(EXTRAS)]' -c constraints.txt > $(VENV)/extras-install.log 2>&1 \
		|| { cat $(VENV)/extras-install.log; exit 1; })

system-deps: ## Debian packages the tests and recipes use (openssh-server, Fashion-MNIST, qemu-user-static)
	@bash scripts/system-deps.sh

profile: venv ## profile MODEL (digits_cnn), or your MODEL_FILE [DATA=eval.npz] [SHAPES="x=1x3x224x224"], on TARGET
	$(HARNESS) profile $(if $(MODEL_FILE),--model-file $(MODEL_FILE) $(if $(DATA),--data $(DATA)) \
	  $(foreach s,$(SHAPES),--input-shape $(s)),--model $(MODEL)) --target $(TARGET) \
	  $(if $(VARIANTS),--variants $(VARIANTS)) $(ARGS)

test: ## run the test suite (installs the Debian packages it needs first when root; else says the command)
	@# before the venv: a missing package stops at once, not after minutes of pip
	@bash scripts/system-deps.sh
	@$(MAKE) --no-print-directory venv
	$(PY) -m pytest $(ARGS)

clean: ## remove caches and reports (keeps .venv)
	rm -rf .harness reports/*/ .pytest_cache

DEVICES ?=
ARCH ?=
farm-up: venv ## start the simulated farm (one sshd per device on 127.0.0.1), write targets/sim-*.yaml: ARCH=aarch64 for emulated Arm devices
	$(HARNESS) farm up $(if $(DEVICES),--devices $(DEVICES)) $(if $(ARCH),--arch $(ARCH))

farm-down: ## stop the simulated farm and remove targets/sim-*.yaml
	@if [ -x $(HARNESS) ]; then $(HARNESS) farm down; fi

REPEATS ?= 3
nightly: venv ## profile MODEL on every enabled target (targets/*.yaml), REPEATS (3) interleaved runs per cell
	$(HARNESS) farm run --model $(MODEL) --repeats $(REPEATS) $(if $(VARIANTS),--variants $(VARIANTS)) $(ARGS)

RUN ?= latest
POLICY ?= policies/default.yaml
gate: venv ## check a run against a release policy, exit 0 pass / 1 fail / 2 not judged, JUnit XML: make gate RUN=latest POLICY=policies/default.yaml
	$(HARNESS) gate --run $(RUN) --policy $(POLICY) $(ARGS)

bench: venv ## benchmark: agent vs vendor tools, overhead, scaling, memory, gate calibration -> reports/bench/ (ARGS=--quick)
	$(PY) -m harness.bench $(ARGS)
