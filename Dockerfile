# The tgflow runner image: `tgflow peft run` (and every other command) as a
# non-root user, designed for a read-only root filesystem (writes go to /tmp
# and the mounted output volume only).
#
#   docker build -t registry.example/tgflow:0.1.0 .
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t ...:0.1.0-cuda .
#
# The default installs the CPU build of torch. For GPUs pass the CUDA wheel
# index that matches the node's driver.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY tgsp ./tgsp
COPY tgflow_cli ./tgflow_cli
COPY runners ./runners
RUN python -m venv /opt/tgflow \
 && /opt/tgflow/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/tgflow/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" "${TORCH_SPEC}" \
 && /opt/tgflow/bin/pip install --no-cache-dir ".[train,n2he]" \
      boto3 google-cloud-secret-manager azure-keyvault-secrets azure-identity

FROM ${PYTHON_IMAGE}
# curl: `route materialize --on-change` hooks call the serving engine's API (vLLM's load_lora_adapter).
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/tgflow /opt/tgflow
RUN groupadd --gid 10001 tgflow && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp tgflow
ENV PATH=/opt/tgflow/bin:$PATH \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
# Platforms set the command (tgflow peft run ...); by itself the image prints help.
CMD ["tgflow", "--help"]
