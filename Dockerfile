# Handspring: a drop-in inference container for Weaviate's multi2vec-clip and multi2vec-bind modules
# (CPU only).
#
#   docker build -t handspring .                                   # weights downloaded at build time
#   docker build -t handspring --build-arg WEIGHTS_SRC=local .     # weights from ./weights/<MODEL>/
#   docker run --rm -p 8080:8080 --stop-timeout 30 handspring     # SIGTERM drains; the default 10 s may cut it short
#   docker build -t handspring:imagebind --build-arg MODEL=imagebind_huge .   # multi2vec-bind (CC BY-NC-SA 4.0 weights)
#
# Build arguments:
#   MODEL        which model to bake in: clip_vit_b_32 (default) or imagebind_huge; the container serves
#                the whole model (HANDSPRING_FEATURE at run time picks one modality's tower instead)
#   WEIGHTS_SRC  download: fetch the official checkpoint and convert it with
#                          `python -m handspring_models.weights download` (CLIP: huggingface.co, or
#                          HF_ENDPOINT pointing at a mirror; ImageBind: dl.fbaipublicfiles.com)
#                local:    copy weights/<MODEL>/ from the build context, a folder written beforehand by
#                          `python -m handspring_models.weights download|convert ... --out weights/<MODEL>`
#                          (no Hugging Face access at build time, or a checkpoint you converted)
#                random:   a random-weight model of the real shape, ONLY to smoke-test the image
#                          without the Hub: its vectors mean nothing (GET /meta says so)
#   BACKEND      torch (default) or openvino: installs OpenVINO (requirements-openvino.txt), converts
#                the model's towers into /weights/<MODEL>/openvino/ at build time (the CLIP, OpenCLIP,
#                sentence-transformers and SigLIP models; ImageBind has no openvino towers and fails
#                the build) and sets HANDSPRING_BACKEND=openvino. Each start then compiles the IR for
#                the CPU it runs on (1.4 s for ViT-B/32 on 2 cores): OpenVINO's compiled blobs are per
#                CPU and as large as the weights, so none is baked in, nor written at run time.
#   HF_ENDPOINT      Hugging Face Hub mirror for WEIGHTS_SRC=download
#   TORCH_INDEX_URL  PyTorch CPU wheel index (or a mirror of it); PYTHON_IMAGE the base image
#
# Needs BuildKit (the default builder since Docker Engine 23; its built-in Dockerfile frontend, so
# no frontend image is pulled): only the weights stage chosen by WEIGHTS_SRC is built, and only the
# files the built stages COPY are sent from the context, so a download build never uploads weights/.
# podman builds it too (`podman build --format docker`: its default OCI format drops HEALTHCHECK);
# `make image` / scripts/image.py pick the engine, and build offline where no registry answers.

ARG PYTHON_IMAGE=python:3.11-slim
ARG MODEL=clip_vit_b_32
ARG WEIGHTS_SRC=download
ARG BACKEND=torch

# ------------------------------------------------------------------ dependencies (a venv, copied whole)
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
# Keep in step with the torch pin in requirements.txt (tests/test_packaging.py checks it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# binutils for `strip`, in this stage only (the image takes /opt/venv from it and nothing else).
# Only a size saving: where Debian's packages cannot be reached the build goes on without it.
RUN (apt-get update && apt-get install -y --no-install-recommends binutils \
     || echo "no binutils: torch's libraries keep their symbol tables") \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
# torch first, from PyTorch's CPU-only index: PyPI's Linux torch wheel pulls multi-GB CUDA libraries.
# The rest from PyPI: requirements.txt's torch==2.13.0 is then already satisfied by 2.13.0+cpu.
# The venv gets no pip (the base image's pip installs into it) and no bytecode (the runtime stage
# compiles only what the service imports). Not used by the service, dropped: torch's C++ headers
# (for building extensions), the C++ test programs and protoc in torch/bin (torch_shm_manager
# stays), and the symbol tables of torch's two big libraries (~100 MB: only debuggers and
# C++ backtraces read them; the dynamic symbols that loading needs are kept).
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --no-compile --only-binary=:all: \
        --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && pip --python /opt/venv/bin/python install --no-cache-dir --no-compile --only-binary=:all: \
        -r /tmp/requirements.txt \
 && cd /opt/venv/lib/python3*/site-packages/torch \
 && rm -rf include test \
 && find bin -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
 && if command -v strip >/dev/null; then strip --strip-unneeded lib/libtorch_cpu.so lib/libtorch_python.so; fi \
 && find /opt/venv -depth -name __pycache__ -type d -exec rm -rf {} + \
 && rm /tmp/requirements.txt
# A layer of its own, so that both backends share the torch layer above.
ARG BACKEND
COPY requirements-openvino.txt /tmp/requirements-openvino.txt
RUN case "${BACKEND}" in \
      torch) ;; \
      openvino) pip --python /opt/venv/bin/python install --no-cache-dir --no-compile --only-binary=:all: \
                    -r /tmp/requirements-openvino.txt \
                && find /opt/venv -depth -name __pycache__ -type d -exec rm -rf {} + ;; \
      *) echo "BACKEND must be torch or openvino, not ${BACKEND}" >&2; exit 1 ;; \
    esac \
 && rm /tmp/requirements-openvino.txt
ENV PATH=/opt/venv/bin:$PATH

# ------------------------------------------------------------------ the panel kernel (C), compiled
# The one compiled part of our code (handspring_models/runtime/native/: the fp32 and bf16 panel
# kernels, faster than oneDNN's on a single request, the int8 kernel and self-attention), built with the sources and
# flags setup.py gives it; gcc
# stays in this stage. Where Debian's packages cannot be reached, or the target is not x86-64,
# the image goes without it and runs oneDNN's kernels (same maths, slower on small batches);
# GET /meta says which kernel runs.
FROM ${PYTHON_IMAGE} AS kernels
COPY handspring_models/runtime/native/panel_gemm.c handspring_models/runtime/native/bf16_gemm.c \
     handspring_models/runtime/native/int8_gemm.c handspring_models/runtime/native/attention.c \
     handspring_models/runtime/native/epilogue.c \
     handspring_models/runtime/native/schedule.c handspring_models/runtime/native/epilogue.h \
     handspring_models/runtime/native/schedule.h /src/
RUN mkdir /out \
 && ( (apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
       && gcc -O3 -mavx2 -mfma -fopenmp -shared -fPIC -o /out/panel_gemm.so \
          /src/panel_gemm.c /src/bf16_gemm.c /src/int8_gemm.c /src/attention.c /src/epilogue.c \
          /src/schedule.c) \
     || echo "WARNING: the panel kernel was not built; the image runs oneDNN's kernels" ) \
 && rm -rf /var/lib/apt/lists/*

# ------------------------------------------------------------------ weights: one of three stages
FROM deps AS weights-tools
WORKDIR /src
COPY handspring_models/ handspring_models/

# Downloaded and converted here, in the builder: the Hugging Face cache lives in a BuildKit cache
# mount, so it is in no image layer (and a rebuild after a code change does not download again).
FROM weights-tools AS weights-download
ARG MODEL
ARG HF_ENDPOINT=https://huggingface.co
RUN --mount=type=cache,target=/hf-cache,id=handspring-hf-cache \
    HF_HOME=/hf-cache TORCH_HOME=/hf-cache/torch HF_HUB_DISABLE_TELEMETRY=1 HF_ENDPOINT="${HF_ENDPOINT}" \
        python -m handspring_models.weights download "${MODEL}" --out "/weights/${MODEL}" \
 && python -m handspring_models.weights verify "/weights/${MODEL}"

# weights/<MODEL>/ from the build context (.dockerignore lets it through; see the note there).
# FROM deps, with the code mounted for `verify` rather than copied before the weights: a change to
# the code then leaves the weights' layers (hundreds of MB) cached.
FROM deps AS weights-local
ARG MODEL
COPY weights/${MODEL}/ /weights/${MODEL}/
RUN chmod -R a+rX,go-w /weights
WORKDIR /src
RUN --mount=type=bind,source=handspring_models,target=/src/handspring_models \
    python -m handspring_models.weights verify "/weights/${MODEL}"

FROM weights-tools AS weights-random
ARG MODEL
RUN python -m handspring_models.weights random "${MODEL}" --out "/weights/${MODEL}" \
 && python -m handspring_models.weights verify "/weights/${MODEL}"

# hadolint ignore=DL3006
FROM weights-${WEIGHTS_SRC} AS weights

# BACKEND=openvino: each tower converted here, once, beside the weights (the server's user could not
# write there). The IR's cache key hashes the code's files: copied, not mounted, so that a change to
# the code converts again (podman leaves a mount's content out of its layer cache).
FROM weights AS weights-converted
ARG MODEL
ARG BACKEND
COPY handspring_models/ /src/handspring_models/
WORKDIR /src
RUN if [ "${BACKEND}" = openvino ]; then \
        python -m handspring_models.weights compile "/weights/${MODEL}" --backend openvino \
        && rm -rf /weights/"${MODEL}"/openvino/*/compiled; \
    fi

# ------------------------------------------------------------------ runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG MODEL
ARG BACKEND
LABEL org.opencontainers.image.title="handspring" \
      org.opencontainers.image.description="CPU inference container for Weaviate's multi2vec-clip and multi2vec-bind modules" \
      io.handspring.model="${MODEL}" \
      io.handspring.backend="${BACKEND}"
RUN groupadd --system --gid 10001 handspring \
 && useradd --system --uid 10001 --gid handspring --create-home --home-dir /home/handspring \
        --shell /usr/sbin/nologin handspring
COPY --from=deps /opt/venv /opt/venv
COPY --from=weights-converted /weights/${MODEL} /weights/${MODEL}
WORKDIR /app
COPY handspring_models/ handspring_models/
COPY --from=kernels /out/ handspring_models/runtime/native/
COPY app/ app/
# The package's version (GET /meta), read from here: the image runs the code from /app, not installed.
COPY pyproject.toml ./
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HANDSPRING_WEIGHTS_DIR=/weights/${MODEL} \
    HANDSPRING_FEATURE=${MODEL} \
    HANDSPRING_BACKEND=${BACKEND}
# Bytecode for what the service imports (torch, the web stack, app/, its part of the standard library):
# the server's user cannot write it, and without it every start compiles them again, in memory.
# Only those modules: compiling all of site-packages would add ~170 MB for ~25 MB that is used.
RUN --mount=type=bind,source=scripts/compile_bytecode.py,target=/tmp/compile_bytecode.py \
    python /tmp/compile_bytecode.py /opt/venv /app
USER 10001:10001
EXPOSE 8080
# Weaviate itself polls /.well-known/ready for up to 120 s; this is for `docker ps`, compose's
# depends_on: service_healthy and orchestrators. No curl in the slim image: Python's urllib
# (an HTTP error status raises, so any non-2xx fails the check).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/.well-known/ready', timeout=4)"]
# python -m app: uvicorn, with the model loading while the web stack imports (faster start-up)
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8080"]
