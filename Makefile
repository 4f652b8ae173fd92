# Edge portability harness. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
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
DEVICES ?=
ARCH ?=
REPEATS ?= 3
RUN ?= latest
POLICY ?= policies/default.yaml

# A value given to make (on the command line, in MAKEFLAGS or in the environment, often a CI variable) is data,
# never make or shell syntax to run. Make itself would run it twice over: a reference to a variable re-expands its
# text, and every variable given on the command line is expanded to export it into each recipe's environment,
# whether a recipe uses it or not (so `$(shell touch X)` in it ran even with `$(value ...)` in the recipes).
# Hence every such variable, and every variable above, becomes a simple variable holding its raw text: make never
# expands that text again, and exports it as it is. Recipes then pass each value to a program as one
# single-quoted word of that raw text (q), or ARGS and the like split on white space into such words (qwords),
# and name programs ($(PY), $(HARNESS)) only quoted. The venv is built by scripts/venv.sh, so no value is ever
# part of a target name or a second make's command line. tests/test_make_wrappers.py runs every wrapper with
# $(shell ...), $(...), backquotes and quotes in every variable. (Out of any makefile's reach: a definition given
# with := on make's command line, and $ in MAKEFLAGS from the environment, are expanded by make as it starts.)
CALLER_VARIABLES := $(foreach v,$(.VARIABLES),$(if $(findstring command line,$(origin $(v))),$(v)))
$(foreach v,$(sort $(CALLER_VARIABLES) PYTHON VENV TARGET MODEL MODEL_FILE DATA SHAPES VARIANTS FORMATS ARGS \
  DEVICES ARCH REPEATS RUN POLICY),$(eval override $(v) := $$(value $(v))))
export $(filter-out SHELL .SHELLFLAGS,$(CALLER_VARIABLES))
override SHELL := /bin/bash
override .SHELLFLAGS := -c

define newline


endef
# a newline, which would end the recipe's command line, is quoted as bash's $'\n'
qw = '$(subst $(newline),'$$'\n'',$(subst ','\'',$(1)))'
q = $(call qw,$(value $(1)))
qwords = $(foreach w,$(value $(1)),$(call qw,$(w)))
PY := $(call qw,$(VENV)/bin/python)
HARNESS := $(call qw,$(VENV)/bin/harness)

.PHONY: help venv system-deps profile test nightly farm-up farm-down gate bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

venv: ## create the virtual environment (.venv, every extra, pinned) if missing or stale
	@bash scripts/venv.sh $(call q,PYTHON) $(call q,VENV)

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
	@bash scripts/venv.sh $(call q,PYTHON) $(call q,VENV)
	$(PY) -m pytest $(call qwords,ARGS)

clean: ## remove caches and reports (keeps .venv)
	rm -rf .harness reports/*/ .pytest_cache

farm-up: venv ## start the simulated farm (one sshd per device on 127.0.0.1), write targets/sim-*.yaml: ARCH=aarch64 for emulated Arm devices
	$(HARNESS) farm up $(if $(value DEVICES),--devices $(call qwords,DEVICES)) $(if $(value ARCH),--arch $(call q,ARCH))

farm-down: ## stop the simulated farm and remove targets/sim-*.yaml
	@if [ -x $(HARNESS) ]; then $(HARNESS) farm down; fi

nightly: venv ## profile MODEL on every enabled target (targets/*.yaml), REPEATS (3) interleaved runs per cell
	$(HARNESS) farm run --model $(call q,MODEL) --repeats $(call q,REPEATS) $(if $(value VARIANTS),--variants $(call q,VARIANTS)) $(call qwords,ARGS)

gate: venv ## check a run against a release policy, exit 0 pass / 1 fail / 2 not judged, JUnit XML: make gate RUN=latest POLICY=policies/default.yaml
	$(HARNESS) gate --run $(call q,RUN) --policy $(call q,POLICY) $(call qwords,ARGS)

bench: venv ## benchmark: agent vs vendor tools, overhead, scaling, memory, gate calibration -> reports/bench/ (ARGS=--quick)
	$(PY) -m harness.bench $(call qwords,ARGS)
