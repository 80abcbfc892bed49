# Test-only stand-in for python:3.12-slim: Debian's python3 + pip, PEP 668 marker removed, and this
# machine's CA bundle so pip can reach the package index from inside `docker build`.
FROM bluegreen-lab/debian:bookworm
LABEL bluegreen-lab.stand-in="1"
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && ln -sf /usr/bin/python3 /usr/local/bin/python
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
