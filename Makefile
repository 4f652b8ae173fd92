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
# only these formats: FORMATS=tflite,onnx (default: every format the model converts to)
FORMATS ?=
ARGS ?=

# Values reach harness as single-quoted words of their raw text: a path with spaces, a quote, a backquote or a
# $(...) from a CI variable is passed as it is, never run by make or the shell. ARGS is split on white space.
q = '$(subst ','\'',$(value $(1)))'
qw = '$(subst ','\'',$(1))'
qwords = $(foreach w,$(value $(1)),$(call qw,$(w)))
STAMP := $(VENV)/.installed

.PHONY: help venv system-deps profile test nightly farm-up farm-down gate bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(STAMP): constraints.txt setup.cfg
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, exactly the CPU build on disk; never let pip choose torch freely.
	$(PY) -m pip install -q torch==2.13.0
	@# the pinned environment: every extra, pinned by constraints.txt; build warnings shown only if it fails
	@$(PY) -m pip install -q -e '.[all,test]' -c constraints.txt > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

venv: $(STAMP) ## create the virtual environment (.venv, every extra, pinned) if missing or stale

system-deps: ## Debian packages the tests and recipes use (openssh-server, Fashion-MNIST, qemu-user-static)
	@bash scripts/system-deps.sh

profile: venv ## profile MODEL (digits_cnn), or your MODEL_FILE [DATA=eval.npz] [SHAPES="x=1x3x224x224"] [FORMATS=tflite], on TARGET
	$(HARNESS) profile $(if $(value MODEL_FILE),--model-file $(call q,MODEL_FILE) $(if $(value DATA),--data $(call q,DATA)) \
	  $(foreach s,$(value SHAPES),--input-shape $(call qw,$(s))),--model $(call q,MODEL)) --target $(call q,TARGET) \
	  $(if $(value VARIANTS),--variants $(call q,VARIANTS)) $(if $(value FORMATS),--formats $(call q,FORMATS)) \
	  $(call qwords,ARGS)

test: ## run the test suite (installs the Debian packages it needs first when root; else says the command)
	@# before the venv: a missing package stops at once, not after minutes of pip
	@bash scripts/system-deps.sh
	@$(MAKE) --no-print-directory venv
	$(PY) -m pytest $(call qwords,ARGS)

clean: ## remove caches and reports (keeps .venv)
	rm -rf .harness reports/*/ .pytest_cache

DEVICES ?=
ARCH ?=
farm-up: venv ## start the simulated farm (one sshd per device on 127.0.0.1), write targets/sim-*.yaml: ARCH=aarch64 for emulated Arm devices
	$(HARNESS) farm up $(if $(value DEVICES),--devices $(call qwords,DEVICES)) $(if $(value ARCH),--arch $(call q,ARCH))

farm-down: ## stop the simulated farm and remove targets/sim-*.yaml
	@if [ -x $(HARNESS) ]; then $(HARNESS) farm down; fi

REPEATS ?= 3
nightly: venv ## profile MODEL on every enabled target (targets/*.yaml), REPEATS (3) interleaved runs per cell
	$(HARNESS) farm run --model $(call q,MODEL) --repeats $(call q,REPEATS) $(if $(value VARIANTS),--variants $(call q,VARIANTS)) $(call qwords,ARGS)

RUN ?= latest
POLICY ?= policies/default.yaml
gate: venv ## check a run against a release policy, exit 0 pass / 1 fail / 2 not judged, JUnit XML: make gate RUN=latest POLICY=policies/default.yaml
	$(HARNESS) gate --run $(call q,RUN) --policy $(call q,POLICY) $(call qwords,ARGS)

bench: venv ## benchmark: agent vs vendor tools, overhead, scaling, memory, gate calibration -> reports/bench/ (ARGS=--quick)
	$(PY) -m harness.bench $(call qwords,ARGS)
