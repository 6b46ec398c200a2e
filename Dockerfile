# syntax=docker/dockerfile:1
# nbjob framework images: run a notebook bundle cell by cell as a batch job (`nbjob run`).
#
# One Dockerfile, one image per framework, chosen with the FRAMEWORK build argument:
#
#     base              OS packages, tini, user uid 1000, the venv        (shared)
#      ├─ framework-torch   PyTorch                                       (thin, per framework)
#      └─ framework-tf      TensorFlow/Keras + its pip NVIDIA libraries   (thin, per framework)
#     nbjob = framework-${FRAMEWORK}: kernel, scikit-learn, nbjob, user, entrypoint   (shared)
#
# The framework is installed before nbjob, so a rebuild after an executor change redoes only the
# last layers. BuildKit and podman/buildah build only the stages the chosen FRAMEWORK needs; the
# base stage is built once and reused from the layer cache by the other framework's build.
#
# Production (default): the framework's CUDA build from PyPI on a slim Debian Python base; the
# host needs only the NVIDIA driver + container toolkit.
#     docker build --build-arg FRAMEWORK=torch -t nbjob-torch .
#     docker build --build-arg FRAMEWORK=tf -t nbjob-tf .
# CPU / offline build (what the tests do, see README, "Framework images"): another base, the CPU
# packages, torch's CPU wheel from a wheelhouse inside the build context:
#     podman build --build-arg BASE=localhost/base-py:test --build-arg FRAMEWORK=torch \
#         --build-arg TORCH_PACKAGE=torch==2.13.0+cpu --build-arg WHEELHOUSE=.build/wheels \
#         -t nbjob-torch:cpu .
#     podman build --build-arg BASE=localhost/base-py:test --build-arg FRAMEWORK=tf \
#         --build-arg TF_PACKAGE=tensorflow-cpu==2.21.0 -t nbjob-tf:cpu .

# Pinned by tag, not by digest: no registry (Docker Hub included) was reachable from the machine
# this was written on, so the digest could not be looked up. When publishing, pin the digest
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`):
#     --build-arg BASE=python:3.11-slim-bookworm@sha256:<digest>
ARG BASE=python:3.11-slim-bookworm
# torch | tf: which framework-* stage the image is built on.
ARG FRAMEWORK=torch


# -- base: everything that does not depend on the framework ---------------------------------------
FROM ${BASE} AS base

ARG BASE
ARG NBJOB_VERSION=0.1.0
ARG TINI_VERSION=0.19.0-*
ARG NB_USER=nbjob
ARG NB_UID=1000
ARG NB_GID=100

LABEL org.opencontainers.image.version="${NBJOB_VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.opencontainers.image.vendor="nbjob" \
      org.opencontainers.image.source="https://github.com/nbjob/nbjob" \
      org.opencontainers.image.base.name="${BASE}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV VENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NB_USER=${NB_USER} \
    NB_UID=${NB_UID} \
    NB_GID=${NB_GID}

# Init process: tini as PID 1 forwards SIGTERM to nbjob and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# Non-root user (uid 1000, gid 100 "users") owning the work folder.
RUN useradd --no-log-init --create-home --uid "${NB_UID}" --gid "${NB_GID}" --shell /bin/bash "${NB_USER}" \
    && install -d -o "${NB_UID}" -g "${NB_GID}" -m 0775 /work

# One venv (PEP 668 bases) shared by the framework, the kernel and nbjob.
RUN python3 -m venv "${VENV}"


# -- framework-torch ------------------------------------------------------------------------------
FROM base AS framework-torch

ARG TORCH_PACKAGE=torch==2.13.0
# A folder of wheels inside the build context, searched before the index (empty: index only).
ARG WHEELHOUSE=

LABEL org.opencontainers.image.title="nbjob-torch" \
      org.opencontainers.image.description="Runs Jupyter notebook bundles as batch jobs with PyTorch (nbjob run)" \
      io.nbjob.framework="${TORCH_PACKAGE}"

ENV NB_FRAMEWORK=PyTorch

# The wheelhouse is bind-mounted from the context, so a local wheel never becomes a layer.
# (Pinned through TORCH_PACKAGE, which hadolint cannot read: DL3013 off.)
# hadolint ignore=DL3013
RUN --mount=type=bind,target=/ctx \
    pip install --no-cache-dir ${WHEELHOUSE:+--find-links "/ctx/${WHEELHOUSE}"} "${TORCH_PACKAGE}"


# -- framework-tf ---------------------------------------------------------------------------------
FROM base AS framework-tf

ARG TF_PACKAGE=tensorflow[and-cuda]==2.21.0
# A folder of wheels inside the build context, searched before the index (empty: index only).
ARG WHEELHOUSE=

LABEL org.opencontainers.image.title="nbjob-tf" \
      org.opencontainers.image.description="Runs Jupyter notebook bundles as batch jobs with TensorFlow/Keras (nbjob run)" \
      io.nbjob.framework="${TF_PACKAGE}"

ENV NB_FRAMEWORK=TensorFlow \
    LD_LIBRARY_PATH=/opt/venv/nvidia-libs \
    TF_CPP_MIN_LOG_LEVEL=1

# The NVIDIA libraries that tensorflow[and-cuda] installs (site-packages/nvidia/*/lib) are linked
# into one folder on LD_LIBRARY_PATH, which TensorFlow needs to find them (CPU builds leave it
# empty). (Pinned through TF_PACKAGE, which hadolint cannot read: DL3013 off.)
# hadolint ignore=DL3013
RUN --mount=type=bind,target=/ctx \
    pip install --no-cache-dir ${WHEELHOUSE:+--find-links "/ctx/${WHEELHOUSE}"} "${TF_PACKAGE}" \
    && mkdir -p "${VENV}/nvidia-libs" \
    && for lib in "${VENV}"/lib/python3*/site-packages/nvidia/*/lib/*.so*; do \
           if [ -e "${lib}" ]; then ln -sf "${lib}" "${VENV}/nvidia-libs/"; fi; \
       done


# -- nbjob: the kernel and the executor on top of the chosen framework ----------------------------
# (FRAMEWORK names one of the stages above, which hadolint cannot follow: DL3006 off.)
# hadolint ignore=DL3006
FROM framework-${FRAMEWORK} AS nbjob

ARG SKLEARN_VERSION=1.7.2
ARG IPYKERNEL_VERSION=7.4.0

# Kernel and the libraries the examples use (scikit-learn ships the digits data set).
RUN pip install --no-cache-dir "ipykernel==${IPYKERNEL_VERSION}" "scikit-learn==${SKLEARN_VERSION}" \
    && python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (${NB_FRAMEWORK})"

# The executor with its cloud storage extras, from the build context (a local path: nothing to
# pin, hence DL3013 off). Only the package `nbjob` is installed (nothing named `executor`).
COPY pyproject.toml README.m[d] /tmp/nbjob-src/
COPY executor /tmp/nbjob-src/executor
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "/tmp/nbjob-src[gcs,azure]" \
    && rm -rf /tmp/nbjob-src \
    && python -m nbjob --version \
    && command -v nbjob >/dev/null

COPY entrypoint.sh /usr/local/bin/entrypoint.sh

USER ${NB_UID}:${NB_GID}
WORKDIR /work
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]
