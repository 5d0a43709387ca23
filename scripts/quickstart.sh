#!/usr/bin/env bash
# The README's first command: install, then run the main job end to end on the embedded default
# (SQLite + file-system broker unless DATABASE_URL / CELERY_BROKER_URL say otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python manage.py demo "$@"
