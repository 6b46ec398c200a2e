#!/bin/sh
# docker run / podman run one-liners for the nbjob framework images (podman: same flags).
# Each runs a notebook bundle to completion; the container's exit code is nbjob's
# (0 ok, 1 a cell raised, 2 usage, 3 invalid input, 4 timeout, 5 kernel died, 6 storage,
# 7 environment unfit, 143 stopped). Checked by tests/test_images.py (run with podman).
# Not meant to be run as a script: copy the line you need.
#
# Image names: `make images` tags nbjob-torch:latest and nbjob-tf:latest (CUDA builds); the CPU
# build (`make images IMAGES_FLAGS=--cpu`, what the tests build) tags localhost/nbjob-torch:cpu
# and localhost/nbjob-tf:cpu: use those names after it. The images run as uid 1000, so a
# results folder mounted from the host must exist and be writable by that uid first, e.g.
#   mkdir -p out && chmod 777 out        (or: sudo chown 1000 out)
# (a folder nbjob cannot write is exit 6, storage, with a local copy of the results named in
# the log; docker itself creates a missing ./out owned by root.)

# 1. Bundle from a local folder (read-only), results into ./out, no network at all:
docker run --rm --network none -v "$PWD/examples/torch-digits:/bundle:ro" -v "$PWD/out:/out" nbjob-torch:latest /bundle --output /out

# 2. Bundle from S3, results to S3. Credentials the standard AWS way: -e NAME without a value
#    passes your shell's variable (nothing secret on the command line or in `ps`); for an
#    S3-compatible store (MinIO, Ceph) add -e NBJOB_S3_ENDPOINT_URL=http://minio:9000.
docker run --rm -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN -e AWS_DEFAULT_REGION nbjob-torch:latest s3://my-bucket/bundles/digits.zip --output s3://my-bucket/runs/digits-1

# 3. On a GPU host (NVIDIA container toolkit; podman: --device nvidia.com/gpu=all), failing
#    fast with exit 7 when no GPU is visible; --ipc=host gives PyTorch data loaders enough /dev/shm:
docker run --rm --gpus all --ipc=host -e NBJOB_REQUIRE_GPU=1 -v "$PWD/examples/torch-digits:/bundle:ro" -v "$PWD/out:/out" nbjob-torch:latest /bundle --output /out

# 4. Settings from the environment instead of arguments (what the Kubernetes recipes do):
docker run --rm -e NBJOB_SOURCE=s3://my-bucket/bundles/digits.zip -e NBJOB_OUTPUT=s3://my-bucket/runs/digits-2 -e NBJOB_PARAMETERS='{"epochs": 100}' -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY nbjob-tf:latest
