# Production image: the locked runtime dependencies only (no dev group, no `dev` extra, no uv, no
# caches), run as uid 10001 by `otpservice serve`. Settings come from the environment or *_FILE
# secrets; serve refuses to start without them. See deploy/README.md.

# Both stages must be the same image: the venv's python is a symlink to the base's interpreter.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_NO_CACHE=1
# Dependencies first, in their own layer: a change to the code alone does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-editable --no-install-project
COPY README.md ./
COPY otpservice ./otpservice
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="otpservice" \
      org.opencontainers.image.description="Voice one-time-password verification over TEL4VN Autocall" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 otpservice \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin otpservice
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
# The base image ships the standard library without bytecode and the root filesystem is read-only
# at run time, so every process would compile it at each start (~0.9 s each, three processes with
# two workers). Importing the app once here compiles just the modules serving uses (~5 MB), and
# fails the build if the runtime dependencies miss anything the app imports.
RUN python -c "import otpservice.cli.service, otpservice.http.app"
ENV PYTHONDONTWRITEBYTECODE=1
# Numeric, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["otpservice", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
