"""Training code for the models this project owns: synthetic data, one seeded command per model.

Nothing here runs in the reader; `pip install -e '.[train]'` brings torch, Pillow and the
font wheels it needs. The shipped ONNX files live in `alpr.gpu.weights` with their model cards.
"""
