# Archomata service image: slim Python, non-root, health-checked.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ARCHOMATA_SQL_DIR=/app/sql \
    ARCHOMATA_HOST=0.0.0.0 \
    ARCHOMATA_PORT=8080

WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY archomata ./archomata
COPY sql ./sql
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin archomata

USER archomata
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('ARCHOMATA_PORT', '8080')}/health/live\", timeout=2)"]
CMD ["archomata", "serve"]
