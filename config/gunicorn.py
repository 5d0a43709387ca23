"""gunicorn settings file: `gunicorn config.wsgi:application -c config/gunicorn.py --bind ...`.

Used by the image (Dockerfile, compose.yaml) and by ``medassist.common.processes.start_web``; the
command line keeps bind/workers/threads/timeout. Prometheus multi-process mode needs two hooks in the
master process: clear what earlier runs left when starting, and retire an exited worker's live gauges.
https://prometheus.github.io/client_python/multiprocess/
"""
import os


def on_starting(server):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    # Loading the settings module (not the apps) puts PROMETHEUS_MULTIPROC_DIR into the environment,
    # where the workers forked next find it.
    settings.PROMETHEUS_MULTIPROC_DIR  # noqa: B018
    from medassist.common.metrics import clear_stale_files

    removed = clear_stale_files()
    server.log.info("metrics: removed %d stale sample files from %s", len(removed),
                    os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def child_exit(server, worker):
    from medassist.common.metrics import mark_process_dead

    mark_process_dead(worker.pid)
