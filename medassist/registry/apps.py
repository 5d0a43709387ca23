from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "medassist.registry"
    label = "registry"
    verbose_name = "Model registry"
