# Two entry points for a fresh machine (Python 3.10+):
#   make demo   - set up .venv and run `fr-mer demo` on generated data
#   make test   - set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: on CPU-only machines this release is
# the CPU wheel; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= fr-mer-demo

.PHONY: demo test setup clean

# constraints.txt pins every other dependency, so a new machine gets the versions the README's
# figures were measured with.
$(BIN)/fr-mer: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $@

setup: $(BIN)/fr-mer

demo: setup
	$(BIN)/fr-mer demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
