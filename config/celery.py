"""The Celery application (`celery -A config worker -Q interactive|batch|training`).

Configuration comes from Django settings (``CELERY_*``); tasks live in ``workers.tasks``.
"""
import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("medassist")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("interactive", "batch", "training")]
app.autodiscover_tasks(["workers"])
