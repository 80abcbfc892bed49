FROM python:3.12-slim

LABEL org.opencontainers.image.source="https://github.com/bluegreen-action/bluegreen-action" \
      org.opencontainers.image.description="Zero-downtime blue-green deploys of a docker-compose app behind nginx, over SSH." \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/action/src

COPY requirements.txt /action/requirements.txt
RUN pip install --only-binary=:all: --requirement /action/requirements.txt

COPY src /action/src
COPY entrypoint /action/entrypoint
# Bytecode made once at build time (PYTHONDONTWRITEBYTECODE stops only the writing at run time).
RUN python3 -m compileall -q /action/src /action/entrypoint

ENTRYPOINT ["python3", "/action/entrypoint/main.py"]
