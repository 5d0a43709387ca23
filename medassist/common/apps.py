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
        from django.db.backends.signals import connection_created

        connection_created.connect(owner_only_sqlite_files, dispatch_uid="medassist-sqlite-0600")


def owner_only_sqlite_files(sender, connection, **kwargs) -> None:
    """Issue 13 (deployment defaults): a SQLite database (and its journal files) is readable by its
    owner only. settings create the main file 0600; this also covers files SQLite or the test runner
    created with the umask's mode (the test database)."""
    if connection.vendor != "sqlite":
        return
    import os

    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    for path in (name, f"{name}-journal", f"{name}-wal", f"{name}-shm"):
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
        except OSError:  # absent, or not ours to change: nothing to tighten
            pass
