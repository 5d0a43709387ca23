from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "medassist.common"
    label = "common"
    verbose_name = "Common"

    def ready(self) -> None:
        import structlog

        # stdlib logging carries the JSON formatter (settings.LOGGING); structlog loggers feed into it.
        structlog.configure(
            processors=[structlog.stdlib.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                        structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=True,
        )
