# Two set-up commands for a new user (see README): `make demo` and `make test`.
# Both build .venv first; nothing is installed outside it.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	# Model wheels pin Pillow/OpenCV builds that clash with ours; gpu/ loads only their ONNX
	# files, so they are installed without their pins. rapidocr-onnxruntime carries the
	# Apache-2.0 PP-OCRv4 models (text detector; v4 recognizer as an option), rapidocr the
	# Apache-2.0 PP-OCRv6 recognizer (the default reader's). platedet carries an AGPL-3.0 detector
	# that the reader uses only when asked to (see docs/models.md); installed so its tests run.
	$(VENV)/bin/pip install -q --no-deps 'rapidocr-onnxruntime==1.4.4' 'rapidocr==3.10.0' 'platedet==0.0.2'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/alpr demo --duration 60

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

.PHONY: venv demo test

# The project's own models: one seeded command each, on CPU (torch from the [train] extra).
# Each prints its validation scores on held-out synthetic plates; see gpu/weights/*.md.
# The arguments can be shortened for a smoke run, e.g. RECOGNIZER_ARGS="--seed 1 --samples 2000 --steps 100".
RECOGNIZER_ARGS ?= --seed 1 --samples 40000 --steps 3000 --workers 2
train-recognizer: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[train]'
	$(VENV)/bin/python -m alpr.gpu.training.recognizer $(RECOGNIZER_ARGS) --out gpu/weights/us_plate_rec.onnx

# One thread and nice: the dev box is shared. --eval-dir only measures (AGPL scenes, never trained on);
# without ../shared/datasets it is skipped.
# --steps 1528 is the work that trained the shipped file (its run was planned by --minutes 27).
DETECTOR_ARGS ?= --seed 1 --scenes 3000 --steps 1528 --threads 1
train-detector: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[train]'
	OMP_NUM_THREADS=1 nice -n 5 $(VENV)/bin/python -m alpr.gpu.training.detector $(DETECTOR_ARGS) --eval-dir ../shared/datasets/openalpr-us --out gpu/weights/us_plate_det.onnx

.PHONY: train-recognizer train-detector
