# syntax=docker/dockerfile:1
# nbjob TensorFlow/Keras image: runs a notebook bundle cell by cell as a batch job (`nbjob run`).
#
# Production (default): tensorflow[and-cuda], whose pip-installed NVIDIA libraries are put on
# LD_LIBRARY_PATH, on a slim Debian Python base; the host needs only the NVIDIA driver +
# container toolkit.
#     docker build -f Dockerfile.tf -t nbjob-tf .
# CPU build (what the tests do): another base and the CPU package (see README, "Framework images"):
#     podman build --build-arg BASE=localhost/base-py:test \
#         --build-arg TF_PACKAGE=tensorflow-cpu==2.21.0 -f Dockerfile.tf -t nbjob-tf:cpu .
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG BASE
ARG TF_PACKAGE=tensorflow[and-cuda]==2.21.0
ARG SKLEARN_VERSION=1.7.2
ARG IPYKERNEL_VERSION=7.4.0
ARG TINI_VERSION=0.19.0-*
# A folder of wheels inside the build context, searched before the index (empty: index only).
ARG WHEELHOUSE=
ARG NBJOB_VERSION=0.1.0
ARG NB_USER=nbjob
ARG NB_UID=1000
ARG NB_GID=100

LABEL org.opencontainers.image.title="nbjob-tf" \
      org.opencontainers.image.description="Runs Jupyter notebook bundles as batch jobs with TensorFlow/Keras (nbjob run)" \
      org.opencontainers.image.version="${NBJOB_VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.opencontainers.image.vendor="nbjob" \
      org.opencontainers.image.source="https://github.com/nbjob/nbjob" \
      org.opencontainers.image.base.name="${BASE}" \
      io.nbjob.framework="${TF_PACKAGE}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV VENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/venv/nvidia-libs \
    TF_CPP_MIN_LOG_LEVEL=1

# Init process: tini as PID 1 forwards SIGTERM to nbjob and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# Non-root user (uid 1000, gid 100 "users") owning the work folder.
RUN useradd --no-log-init --create-home --uid "${NB_UID}" --gid "${NB_GID}" --shell /bin/bash "${NB_USER}" \
    && install -d -o "${NB_UID}" -g "${NB_GID}" -m 0775 /work

# The framework, in a venv (PEP 668 bases) shared by nbjob and the kernel. The wheelhouse is
# bind-mounted from the context, so a local wheel never becomes a layer. The NVIDIA libraries
# that tensorflow[and-cuda] installs (site-packages/nvidia/*/lib) are linked into one folder on
# LD_LIBRARY_PATH, which TensorFlow needs to find them (CPU builds leave it empty). (Pinned through
# TF_PACKAGE, which hadolint cannot read: DL3013 off.)
# hadolint ignore=DL3013
RUN --mount=type=bind,target=/ctx \
    python3 -m venv "${VENV}" \
    && pip install --no-cache-dir ${WHEELHOUSE:+--find-links "/ctx/${WHEELHOUSE}"} "${TF_PACKAGE}" \
    && mkdir -p "${VENV}/nvidia-libs" \
    && for lib in "${VENV}"/lib/python3*/site-packages/nvidia/*/lib/*.so*; do \
           if [ -e "${lib}" ]; then ln -sf "${lib}" "${VENV}/nvidia-libs/"; fi; \
       done

# Kernel and the libraries the examples use (scikit-learn ships the digits data set).
RUN pip install --no-cache-dir "ipykernel==${IPYKERNEL_VERSION}" "scikit-learn==${SKLEARN_VERSION}" \
    && python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (TensorFlow)"

# The executor, from the build context (a local path: nothing to pin, hence DL3013 off).
COPY pyproject.toml README.m[d] /tmp/nbjob-src/
COPY executor /tmp/nbjob-src/executor
# hadolint ignore=DL3013
RUN pip install --no-cache-dir /tmp/nbjob-src \
    && rm -rf /tmp/nbjob-src \
    && command -v nbjob >/dev/null

COPY entrypoint.sh /usr/local/bin/entrypoint.sh

USER ${NB_UID}:${NB_GID}
WORKDIR /work
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]
