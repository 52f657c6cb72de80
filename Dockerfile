# One image for every service in docker-compose.yml: the accounts service, the
# saga and the contract run are all this repository, on the pinned requirements.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# The requirements before the code, so that a code change reuses this layer.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . ./

# Run unprivileged. /data holds the saga's SQLite log; a named volume mounted
# there starts with this ownership.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /data \
    && chown app /data
USER app

# The accounts service by default; docker-compose.yml gives each service its
# command, and its health check to the services that serve HTTP.
EXPOSE 8000
CMD ["python", "-m", "server", "--host", "0.0.0.0", "--port", "8000"]
