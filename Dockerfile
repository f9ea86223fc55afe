# The worker image: slim, non-root, pinned dependencies, a health check on /healthz.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY streams ./streams
# The wheel ships the JSON Schemas as data files (pyproject.toml: tool.setuptools.data-files).
COPY schemas ./schemas
RUN pip install --no-cache-dir --prefix=/install -c requirements/constraints.txt .

FROM python:3.11.7-slim-bookworm
RUN useradd --create-home --uid 10001 lifecycle && mkdir -p /var/lib/lifecycle-triggers \
    && chown lifecycle /var/lib/lifecycle-triggers
COPY --from=build /install /usr/local
USER lifecycle
# The metrics port on every interface of the container (the worker's own default is 127.0.0.1).
ENV STATE_DIR=/var/lib/lifecycle-triggers METRICS_PORT=9108 METRICS_HOST=0.0.0.0 PYTHONUNBUFFERED=1
VOLUME ["/var/lib/lifecycle-triggers"]
EXPOSE 9108
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["lifecycle-triggers"]
CMD ["worker"]
