# syntax=docker/dockerfile:1
#
# The denoising-autoencoder service: the `dae-*` commands and the shipped checkpoints in one image.
#
#   docker build -t dae-service:cuda .                      # NVIDIA GPU hosts (the default)
#   docker build -t dae-service:cpu --build-arg BASE=cpu .  # any host, much smaller
#
# Both flavours run the same code; without a GPU (or with DAE_DEVICE=cpu) the CUDA image serves on the
# CPU too. docker-compose.yml builds and runs it; see README.md (Deployment).

# Which flavour to build: cuda or cpu.
ARG BASE=cuda

# Both flavours share the OS (Ubuntu 24.04, Python 3.12 from apt), so one recipe builds both and the
# virtual environment built in the `build` stage runs unchanged in the runtime stage (same interpreter
# path). CUDA: the nvidia/cuda *base* flavour rather than *runtime*: the torch wheels bring their own
# CUDA libraries (cuBLAS, cuDNN, ... as nvidia-* wheels), so the image needs only what `base` adds to
# Ubuntu: cudart and the NVIDIA_* variables that make the NVIDIA container toolkit mount the host's
# driver. `runtime` would add about 2 GB of libraries torch never loads. The CUDA version of the base
# and of the wheels (CUDA_TORCH_INDEX_URL) must agree: 12.8 runs on drivers >= 570 and has kernels
# for every GPU from Volta to Blackwell. For another CUDA version override both build args together,
# e.g. CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04 and CUDA_TORCH_INDEX_URL=.../whl/cu126.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG CUDA_TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG CPU_IMAGE=ubuntu:24.04

FROM ${CUDA_IMAGE} AS os-cuda
ARG CUDA_TORCH_INDEX_URL
ENV TORCH_INDEX_URL=${CUDA_TORCH_INDEX_URL}

FROM ${CPU_IMAGE} AS os-cpu
# CPU-only torch wheels: about 200 MB instead of several GB of CUDA libraries.
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# BuildKit builds only the flavour selected here (the other base is never pulled). DL3006 mistakes the
# stage name for an untagged image.
# hadolint ignore=DL3006
FROM os-${BASE} AS os
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------------
# build: install the project (not editable) into /opt/venv; compilers and pip caches stay here.
FROM os AS build
# Ubuntu's own python3 packages: versions follow the base image's release, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

# torch first, from the index of the selected flavour, in a layer of its own: it is most of the
# image and changes far less often than the code. `pip install .` below then finds it satisfied.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY service ./service
# Then a smoke test of the installed package (-I: not the sources in this folder), demo page included.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
    && python -I -c "import models, training.cli, service.app; from importlib.resources import files; \
assert (files('service') / 'static' / 'index.html').is_file(), 'service/static missing from the wheel'"

# ---------------------------------------------------------------------------------------------------
# runtime: the interpreter, the virtual environment, the checkpoints; no pip cache, no sources.
FROM os AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid: files it writes into the checkpoints volume (the `train` service) keep a
# stable owner across rebuilds. For a bind-mounted host folder, run as your own uid instead
# (`user: "1000:1000"` in compose) or chown the folder to 10001.
ARG UID=10001
RUN groupadd --system --gid "$UID" dae \
    && useradd --system --uid "$UID" --gid dae --home-dir /app --no-create-home --shell /usr/sbin/nologin dae \
    && install -d -o dae -g dae /app /data

COPY --from=build /opt/venv /opt/venv
# The shipped models, baked in. A volume mounted on /checkpoints (docker-compose.yml does) replaces
# them; an empty named volume is first filled with these. Owned by `dae` so that the `train` service,
# running as the same user, can add checkpoints to that volume.
COPY --chown=dae:dae checkpoints /checkpoints

ENV DAE_CHECKPOINT_DIR=/checkpoints
WORKDIR /app
# Numeric, so that runtimes that check for non-root (Kubernetes runAsNonRoot) can verify it.
USER ${UID}:${UID}
EXPOSE 8000

# Ready = every model loaded and warmed up (GET /readyz answers 200; 503 before). Python's urllib, not
# curl, which the image does not have; any failure (refused, 503, timeout) exits 1 = unhealthy.
# start-period: loading and warming up the models takes a while on a CPU or a cold GPU.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DAE_PORT', '8000') + '/readyz', timeout=4)"]

# Exec form: dae-serve is the process that receives SIGTERM from `docker stop`, stops accepting,
# finishes the requests it holds and exits 0. The host must be 0.0.0.0 inside a container; every other
# setting comes from DAE_* variables. This is the command the test suite launches (tests/deploy).
CMD ["dae-serve", "--host", "0.0.0.0"]
