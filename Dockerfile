FROM python:3.12-slim

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
