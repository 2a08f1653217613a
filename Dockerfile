# syntax=docker/dockerfile:1
# bsym-app: BrainSymphony embeddings of fMRIPrep/QSIPrep derivatives, as a BIDS-App.
#
#   docker build -t bsym-app:0.1.0 .                          # CPU image (the default target, "cpu")
#   docker build --target cuda -t bsym-app:0.1.0-cuda .        # GPU image (CUDA build of torch; run with --gpus all)
#   docker build --target test .                               # runs the test suite inside the CPU image
#
# Stages: base (Python) and wheel (the app, built where a C compiler is) -> venv-cpu / venv-cuda (pinned
# requirements + the app) -> assets (atlas and the official weights, fetched at pinned URLs, sha256 checked
# and recorded) -> cpu / cuda (non-root runtime).
# Nothing is downloaded at run time: the image runs with no network.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The same Python with a C compiler, to build the wheel's one extension (the Perceiver's key stream).
ARG PYTHON_BUILD_IMAGE=python:3.11.14-bookworm
ARG BSYM_VERSION=0.1.0
ARG TORCH_VERSION=2.13.0

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# The application wheel, built once for both variants, with its compiled key stream (setup.py).
FROM ${PYTHON_BUILD_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY bsym_cli ./bsym_cli
COPY simulation ./simulation
COPY pipelines ./pipelines
COPY brainsymphony ./brainsymphony
RUN pip wheel --no-deps --wheel-dir /wheels .

# CPU variant: torch from the CPU wheel index (no CUDA libraries), then the pinned requirements.
FROM base AS venv-cpu
ARG TORCH_VERSION
COPY docker/requirements.txt /tmp/requirements.txt
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
    && pip install -r /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl

# CUDA variant: the PyPI torch wheel carries its CUDA runtime; the driver comes from the host (--gpus / --nv).
FROM base AS venv-cuda
ARG TORCH_VERSION
COPY docker/requirements.txt /tmp/requirements.txt
RUN pip install "torch==${TORCH_VERSION}" \
    && pip install -r /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl

# Assets: default atlas (Schaefer-400 from TemplateFlow + Tian S3 from its release) and the authors' weights,
# converted with `bsym weights import-official`; sha256 of everything in /opt/bsym/ASSETS.json and SHA256SUMS.
FROM venv-cpu AS assets
COPY docker/fetch_assets.py /tmp/fetch_assets.py
RUN python /tmp/fetch_assets.py /opt/bsym --bsym /opt/venv/bin/bsym \
    && rm -rf /opt/bsym/downloads/templateflow \
    && chmod -R a+rX,go-w /opt/bsym

FROM base AS runtime-common
ARG BSYM_VERSION
LABEL org.opencontainers.image.title="bsym-app" \
      org.opencontainers.image.description="BIDS-App: BrainSymphony embeddings of fMRIPrep/QSIPrep derivatives" \
      org.opencontainers.image.version="${BSYM_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="bsym-app"
# Assets live outside $HOME and are world-readable; caches go to the work directory at start-up
# (bsym_cli.levels.runtime.redirect_caches); one thread per process unless --omp-nthreads says otherwise.
ENV BSYM_CONTAINER_TYPE=docker \
    BSYM_CONTAINER_TAG="bsym-app:${BSYM_VERSION}" \
    BSYM_BAKED_ATLAS_DIR=/opt/bsym/atlases \
    BSYM_WEIGHTS=/opt/bsym/weights/official \
    BSYM_ASSETS=/opt/bsym/ASSETS.json \
    BSYM_CACHE_DIR=/opt/bsym/cache \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    NIPYPE_NO_ET=1 \
    MPLBACKEND=Agg \
    HOME=/home/bsym
RUN useradd --create-home --home-dir /home/bsym --uid 1000 --user-group --shell /usr/sbin/nologin bsym
COPY --from=assets /opt/bsym /opt/bsym
WORKDIR /tmp

FROM runtime-common AS cuda
ARG BSYM_VERSION
LABEL org.opencontainers.image.version="${BSYM_VERSION}-cuda"
ENV BSYM_CONTAINER_TAG="bsym-app:${BSYM_VERSION}-cuda"
COPY --from=venv-cuda /opt/venv /opt/venv
USER 1000:1000
ENTRYPOINT ["/opt/venv/bin/bsym-app"]

# The test suite inside the CPU image (build fails if a test fails).
FROM runtime-common AS test
COPY --from=venv-cpu /opt/venv /opt/venv
COPY docker/requirements-test.txt /tmp/requirements-test.txt
RUN pip install -r /tmp/requirements-test.txt
WORKDIR /src
COPY --chown=1000:1000 setup.cfg pyproject.toml ruff.toml ./
COPY --chown=1000:1000 bsym_cli ./bsym_cli
COPY --chown=1000:1000 simulation ./simulation
COPY --chown=1000:1000 pipelines ./pipelines
COPY --chown=1000:1000 brainsymphony ./brainsymphony
COPY --chown=1000:1000 tests ./tests
# the tests import the package from /src: give it the extension the image installed
RUN cp "$(python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"/brainsymphony/_keystream*.so \
    brainsymphony/
USER 1000:1000
RUN bsym-app --version && python -m pytest -q -x -p no:cacheprovider tests
ENTRYPOINT ["/opt/venv/bin/python", "-m", "pytest"]

FROM runtime-common AS cpu
COPY --from=venv-cpu /opt/venv /opt/venv
USER 1000:1000
ENTRYPOINT ["/opt/venv/bin/bsym-app"]
