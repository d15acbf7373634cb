#!/usr/bin/env bash
# Installs what the cluster tests' S3 checkpoint store needs, idempotently: an S3-compatible
# server (PyPI's moto[server], run as `python3 -m moto.server`) and boto3 to create buckets.
set -euo pipefail
if ! python3 -c "import moto.server, boto3, flask_cors" 2>/dev/null; then
    echo "setup-s3: installing moto[server] (an S3-compatible server) and boto3" >&2
    python3 -m pip install --quiet 'moto[server]>=5.0.20' boto3 >&2 \
        || python3 -m pip install --quiet --user 'moto[server]>=5.0.20' boto3 >&2
fi
