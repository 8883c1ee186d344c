# shoptet-worker image: one image for the worker replicas (`up`) and the ingress (`ingress`).
# Pinned base so a rebuild gives the same Python; bump the tag deliberately.
FROM python:3.11.10-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (cached until pyproject.toml changes), then the code.
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY applications ./applications
COPY nodes ./nodes
COPY simulator ./simulator
RUN pip install .

# Topology files are read from TOPOLOGY_DIR (relative to the working directory) at `up`.
COPY topology ./topology

# Non-root; var/ holds the local state file that `up` writes.
RUN useradd --create-home --uid 10001 worker && mkdir -p /app/var && chown worker /app/var
USER worker

ENV ENVIRONMENT=production \
    LOG_FORMAT=json \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080

EXPOSE 8080
ENTRYPOINT ["shoptet-worker"]
CMD ["up"]
