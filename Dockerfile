# The runtime image: the transfer-saga package with its pinned runtime
# dependencies, and nothing else (no tests, no development tools). Its
# programs are `accounts-service` and `saga`; docker-compose.yml gives each
# service its command, and mounts the data files (instances/) it reads.

# The wheel is built in a stage of its own, so that the build's tools and the
# repository's other folders stay out of the image.
FROM python:3.11-slim AS wheel

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY . ./
RUN pip wheel --no-deps --wheel-dir /wheels .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The pinned runtime dependencies before the package, read from
# pyproject.toml, so that a change to the code alone reuses this layer.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; print(*tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        > /tmp/runtime.txt \
    && pip install -r /tmp/runtime.txt \
    && rm /tmp/pyproject.toml /tmp/runtime.txt

# The package alone: its dependencies are all in place, and pip check says so.
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
    && rm -rf /wheels \
    && pip check

# Run unprivileged. /data holds the saga's SQLite log; a named volume mounted
# there starts with this ownership. /app holds no code: it is where the
# relative paths of a command (--accounts instances/accounts/bank-a.json)
# resolve, with instances/ mounted into it.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /data /app \
    && chown app /data
WORKDIR /app
USER app

EXPOSE 8000
CMD ["accounts-service", "--host", "0.0.0.0", "--port", "8000"]
