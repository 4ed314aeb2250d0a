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
# /etc/alpr/tls: where init-certs writes the dev certificate (docker-compose); a named
# volume mounted there starts as a copy of this folder, so it is owned by the service user.
RUN mkdir -p /etc/alpr/tls && chown 10001:10001 /etc/alpr/tls
USER 10001
ENTRYPOINT ["alpr"]
