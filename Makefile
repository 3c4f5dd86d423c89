# `make test` and `make demo` are each the only command a fresh machine needs:
# they create .venv and install into it when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,demo,plot,mpi,kenlm,export]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/elman demo

bench: $(STAMP)
	$(BIN)/elman bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
