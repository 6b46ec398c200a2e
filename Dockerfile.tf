# syntax=docker/dockerfile:1
# nbjob-tf: the nbjob image with TensorFlow/Keras, a thin layer on nbjob-base (Dockerfile.base),
# which holds everything else (tini, user, venv, ipykernel, scikit-learn, nbjob, entrypoint).
#
# Production (default): tensorflow[and-cuda], whose pip-installed NVIDIA libraries are put on
# LD_LIBRARY_PATH; the host needs only the NVIDIA driver + container toolkit. Base first:
#     docker build -f Dockerfile.base -t nbjob-base:0.1.0 .
#     docker build -f Dockerfile.tf -t nbjob-tf .
# CPU build (what the tests do, see docs/images.md):
#     podman build --build-arg BASE_IMAGE=localhost/nbjob-base:cpu \
#         --build-arg TF_PACKAGE=tensorflow-cpu==2.21.0 -f Dockerfile.tf -t nbjob-tf:cpu .
ARG BASE_IMAGE=nbjob-base:0.1.0
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG TF_PACKAGE=tensorflow[and-cuda]==2.21.0
# A folder of wheels inside the build context, searched before the index (empty: index only).
ARG WHEELHOUSE=

LABEL org.opencontainers.image.title="nbjob-tf" \
      org.opencontainers.image.description="Runs Jupyter notebook bundles as batch jobs with TensorFlow/Keras (nbjob run)" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.nbjob.framework="${TF_PACKAGE}"

ENV NB_FRAMEWORK=TensorFlow \
    LD_LIBRARY_PATH=/opt/venv/nvidia-libs \
    TF_CPP_MIN_LOG_LEVEL=1

# The framework into the base's venv, and the kernel named after it. The NVIDIA libraries that
# tensorflow[and-cuda] installs (site-packages/nvidia/*/lib) are linked into one folder on
# LD_LIBRARY_PATH, which TensorFlow needs to find them (CPU builds leave it empty). The
# wheelhouse is bind-mounted from the context, so a local wheel never becomes a layer. (Pinned
# through TF_PACKAGE, which hadolint cannot read: DL3013 off.)
# Installed as root, then back to the base's user: NB_UID/NB_GID (1000/100) are ENV of the base
# image, which hadolint cannot see, hence DL3066 off on both USER lines.
# hadolint ignore=DL3066
USER root
# hadolint ignore=DL3013
RUN --mount=type=bind,target=/ctx \
    pip install --no-cache-dir ${WHEELHOUSE:+--find-links "/ctx/${WHEELHOUSE}"} "${TF_PACKAGE}" \
    && mkdir -p "${VENV}/nvidia-libs" \
    && for lib in "${VENV}"/lib/python3*/site-packages/nvidia/*/lib/*.so*; do \
           if [ -e "${lib}" ]; then ln -sf "${lib}" "${VENV}/nvidia-libs/"; fi; \
       done \
    && python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (${NB_FRAMEWORK})" \
    && rm -rf "${HOME}/.ipython"
# hadolint ignore=DL3066
USER ${NB_UID}:${NB_GID}
