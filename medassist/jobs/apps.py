from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "medassist.jobs"
    label = "jobs"
    verbose_name = "Jobs"
