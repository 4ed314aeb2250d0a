# The one image every service runs (`alpr <subcommand>`); GPU workers use the
# same code with the TensorRT extra on an NVIDIA base (see infra/k8s).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY topologies topologies
COPY schemas schemas
COPY gpu gpu
COPY infra infra
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps 'rapidocr-onnxruntime==1.4.4'
USER 10001
ENTRYPOINT ["alpr"]
