from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "medassist.knowledge"
    label = "knowledge"
    verbose_name = "Knowledge (corpus, concepts, co-occurrence)"
