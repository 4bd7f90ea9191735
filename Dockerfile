# chemtune's cluster image: the CUDA runtime, the CUDA build of the torch version pyproject.toml pins,
# and chemtune with the cluster extras. The manifests in cluster/ run it as every Ray node (head and workers).
#   docker build -t "$CHEMTUNE_IMAGE" .  &&  docker push "$CHEMTUNE_IMAGE"     (see cluster/README.md, step 1)
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# The torch pin must match pyproject.toml (tests/cluster/test_dockerfile.py checks it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# wget/curl: Ray's health checks and KubeRay probes; git: `pip install git+...` of study plug-ins.
# The CUDA base image's tag pins the distribution; its packages follow it (no per-package pins).
# KubeRay's convention: Ray runs as user `ray` (uid 1000) with its home as the working directory.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates curl wget git \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --create-home --uid 1000 --shell /bin/bash ray

# Heavy and rarely changing: a layer of its own. pip then finds chemtune's torch requirement satisfied.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/chemtune
COPY pyproject.toml README.md ./
COPY studies/ studies/
COPY trainables/ trainables/
COPY search_spaces/ search_spaces/
COPY cluster/ cluster/
# chemtune itself: its dependencies are pinned by pyproject.toml, not here.
# hadolint ignore=DL3013
RUN pip install ".[cluster]" && chemtune list tasks

USER 1000
WORKDIR /home/ray
