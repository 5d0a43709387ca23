from django.apps import AppConfig


class ToolsConfig(AppConfig):
    name = "medassist.tools"
    label = "tools"
    verbose_name = "Measurement and operations"
