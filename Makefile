# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv when it is
# missing or older than pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: venv test demo lint format bench bench-peer clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tests

demo: $(STAMP)
	bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check transformer_tf tests scripts benchmarks examples
	$(BIN)/ruff format --check transformer_tf tests scripts benchmarks examples

format: $(STAMP)
	$(BIN)/ruff check --fix transformer_tf tests scripts benchmarks examples
	$(BIN)/ruff format transformer_tf tests scripts benchmarks examples

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py

# The peer benchmark (benchmarks/peer.py): OpenNMT-tf 2.32 (TF 2.12) in its own venv, then this
# engine, on the same Multi30k model and SentencePiece pieces. DATA: the Multi30k directory.
ONMT_VENV := benchmarks/.venv-opennmt
DATA ?= ../shared/data/multi30k
$(ONMT_VENV)/.installed:
	test -x $(ONMT_VENV)/bin/python || $(PYTHON) -m venv $(ONMT_VENV)
	$(ONMT_VENV)/bin/pip install --quiet --upgrade pip
	$(ONMT_VENV)/bin/pip install --quiet "opennmt-tf[tensorflow]==2.32.0"
	touch $@

bench-peer: $(STAMP) $(ONMT_VENV)/.installed
	nice -n 5 $(BIN)/python benchmarks/peer.py --data $(DATA)

clean:
	rm -rf $(VENV) runs .pytest_cache
