# gpu-twin: one image for `twin serve`, `twin sensors …` and `twin dashboard` (docker-compose.yml).
# Python 3.11 as on our machines (pyproject: requires-python >= 3.11); slim Debian bookworm base.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/gpu-twin
COPY pyproject.toml README.md ./
COPY twin ./twin
COPY sensors ./sensors
COPY models ./models
COPY dashboard ./dashboard
RUN pip install . && useradd --system --uid 10001 --home-dir /var/lib/gpu-twin --create-home twin
USER twin
WORKDIR /var/lib/gpu-twin
ENTRYPOINT ["twin"]
CMD ["--help"]
