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

# A value given to make (on its command line or in the environment, often a CI variable) is data: neither make
# nor the shell ever runs what it holds. Make would, twice over: a reference to a variable expands its text again,
# and make expands every variable given on its command line to export it to each recipe's environment, whether a
# recipe uses it or not (that ran `$(shell touch X)` in MODEL_FILE even with $(value ...) in the recipes).
# So each such variable, and each variable above, becomes a simple variable holding its raw text: make never
# expands that text, and exports it as it is. Recipes pass each value as one single-quoted word (q), or split
# on white space into such words (qwords: ARGS, SHAPES, DEVICES), and run $(PY) and $(HARNESS) only quoted.
# scripts/venv.sh builds the venv, so no value is part of a target name or of a second make's command line.
# The makefile's own variables are `override`: a value given for one of them is ignored.
# Out of any makefile's reach, because make expands them as it starts: a definition given with := on make's
# command line, and one in a MAKEFLAGS environment variable. tests/test_make_wrappers.py checks all of this.
# (two loops: inside a loop, the origin of a variable named as the loop's own is the loop's)
override CALLER_VARIABLES := $(sort $(foreach v,$(.VARIABLES),$(if $(findstring command line,$(origin $(v))),$(v))) \
  $(foreach u,$(.VARIABLES),$(if $(findstring command line,$(origin $(u))),$(u))))
override define newline


endef
# one eval of all the assignments, outside the loop, so that even a variable named v is converted
$(eval $(foreach v,$(sort $(CALLER_VARIABLES) PYTHON VENV TARGET MODEL MODEL_FILE DATA SHAPES VARIANTS FORMATS \
  ARGS DEVICES ARCH REPEATS RUN POLICY),override $(v) := $$(value $(v))$(newline)))
export $(filter-out SHELL .SHELLFLAGS CALLER_VARIABLES newline qw q qwords PY HARNESS,$(CALLER_VARIABLES))
override SHELL := /bin/bash
override .SHELLFLAGS := -c

# a newline, which would end the recipe's command line, is quoted as bash's $'\n'
override qw = '$(subst $(newline),'$$'\n'',$(subst ','\'',$(1)))'
override q = $(call qw,$(value $(1)))
override qwords = $(foreach w,$(value $(1)),$(call qw,$(w)))
override PY := $(call qw,$(VENV)/bin/python)
override HARNESS := $(call qw,$(VENV)/bin/harness)

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

gate: venv ## check a run against a release policy (harness gate: 0 pass / 1 fail / 2 not judged; make gate: 2 for a fail too), JUnit XML: make gate RUN=latest POLICY=policies/default.yaml
	$(HARNESS) gate --run $(call q,RUN) --policy $(call q,POLICY) $(call qwords,ARGS)

bench: venv ## benchmark: agent vs vendor tools, overhead, scaling, memory, gate calibration -> reports/bench/ (ARGS=--quick)
	$(PY) -m harness.bench $(call qwords,ARGS)
