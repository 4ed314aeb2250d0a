# Two set-up commands for a new user (see README): `make demo` and `make test`.
# Both build .venv first; nothing is installed outside it.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	# platedet pins Pillow/OpenCV releases older than ours; it is used only for its ONNX
	# weights, loaded by gpu/, so it is installed without its pins.
	$(VENV)/bin/pip install -q --no-deps 'platedet==0.0.2'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/alpr demo --duration 60

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

.PHONY: venv demo test
