# losscape: set-up, build, demo, tests, benchmark. Each target does all the set-up it needs.
#   make demo   - synthetic CIFAR-10 (or $CIFAR10_DIR), train a small ResNet, compute a 2-D surface,
#                 the PCA plane of its training path and its checkpoints' sharpness
#   make test   - the whole test suite (CPU): the unit tier, then the integration tier
#   make unit   - the unit tier alone (cargo test --lib: no Python, no fixtures)
#   make bench  - speed benchmark (see BENCHMARKS.md)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch-sys finds libtorch through this Python's torch wheel (docs/building.md).
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)
BIN := target/release/losscape

DEMO ?= demo
DEMO_ARCH ?= resnet8
DEMO_EPOCHS ?= 6
DEMO_TRAIN ?= 2500
DEMO_EVAL ?= 500
DEMO_GRID ?= -1:1:21
DEMO_SHARP ?= 200
# make bench's --rel-error surface: the demo's trained ResNet-8, 21x21 on 4000 synthetic images.
REL_ERROR_ARGS ?= --model resnet8 --train-epochs 6 --train-n 4000 --n 50000 --grid 7 --min-samples 2048

# Debian packages the tests need (a headless browser for the HTML page, poppler's pdftoppm for the
# PDF figures); root or sudo installs them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all venv build test unit demo bench clean test-deps

all: build

$(VENV)/.stamp: models/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r models/requirements.txt
	touch $@

venv: $(VENV)/.stamp

build: $(VENV)/.stamp
	cargo build --release

test-deps:
	@command -v chromium >/dev/null && command -v pdftoppm >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium poppler-utils; }

unit: $(VENV)/.stamp
	cargo test --release --lib

test: build test-deps unit
	cargo test --release --test tests -- --test-threads=2

# With CIFAR10_DIR=/path/to/cifar-10-batches-bin (binary version) the demo uses real CIFAR-10,
# training on its first $(DEMO_TRAIN) images; otherwise it makes a synthetic set first.
demo: build
ifdef CIFAR10_DIR
	$(eval DATA := $(CIFAR10_DIR))
else
	$(eval DATA := $(DEMO)/data)
	$(PY) models/synthetic_cifar.py --out $(DATA) --train $(DEMO_TRAIN) --test 500
endif
	$(PY) models/train.py --data $(DATA) --arch $(DEMO_ARCH) --epochs $(DEMO_EPOCHS) --limit $(DEMO_TRAIN) --out $(DEMO)/train
	$(BIN) surface --model $(DEMO)/train/model.pt --data $(DATA) --limit $(DEMO_EVAL) \
		--x=$(DEMO_GRID) --y=$(DEMO_GRID) --out $(DEMO)/surface --overwrite
	$(BIN) trajectory --checkpoints $(DEMO)/train/checkpoints --arch $(DEMO)/train/model.pt --data $(DATA) \
		--split train,test --limit $(DEMO_EVAL) --n 15 --out $(DEMO)/trajectory --overwrite
	$(BIN) sharpness --checkpoints $(DEMO)/train/checkpoints --arch $(DEMO)/train/model.pt --data $(DATA) \
		--limit $(DEMO_SHARP) --measure average,worst,pacbayes --radius 0.05 --samples 20 --steps 10 \
		--out $(DEMO)/sharpness --overwrite
	@echo "demo: a random-direction surface in $(DEMO)/surface, the PCA plane of the training path in $(DEMO)/trajectory, the checkpoints' sharpness in $(DEMO)/sharpness"

# Speed: reference-style loop vs best eager and compiled PyTorch vs losscape (with BatchNorm
# re-estimation timed too), then the top eigenvalue of the Hessian and the Gauss-Newton matrix
# against PyHessian, curvlinops and hessian-eigenthings, then worst-case sharpness
# ascent steps and an epoch of curve training (connect) against eager and compiled PyTorch, then
# a surface estimated with --rel-error against the exact one; in one run on this machine.
bench: build
	$(PY) bench/bench.py --bin $(BIN) --recompute $(BENCH_ARGS)
	$(PY) bench/hessian.py --bin $(BIN) $(HESSIAN_ARGS)
	$(PY) bench/sharpness.py --bin $(BIN) $(SHARPNESS_ARGS)
	$(PY) bench/connect.py --bin $(BIN) $(CONNECT_ARGS)
	$(PY) bench/rel_error.py --bin $(BIN) $(REL_ERROR_ARGS)

clean:
	rm -rf target $(DEMO)
