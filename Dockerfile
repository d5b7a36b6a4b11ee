# Production image: the locked dependencies, no dev tools, a non-root user, `otpservice serve`.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY otpservice ./otpservice
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --system --uid 10001 otpservice
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
USER otpservice
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# Settings come from the environment (or *_FILE secrets); serve refuses to start without them.
CMD ["otpservice", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
