"""The model runtime of a worker process: what is loaded, and which model versions are active.

One ``Runtime`` per process (``get_runtime()``), built in ``worker_process_init`` so that every
pool child loads its resources once, before its first task. ``refresh()`` is the cheap per-task
check (one small query) that notices a promoted version without a restart.
"""
from __future__ import annotations

import logging
import threading

from medassist.registry.models import ModelVersion

log = logging.getLogger(__name__)


def _builtin_concepts_version() -> dict:
    """The concept dictionaries are versioned by the packages that ship them."""
    from medassist.knowledge.concepts import dictionary_versions

    versions = dictionary_versions()
    return {"role": ModelVersion.Role.CONCEPTS, "name": "+".join(f"{k}=={v}" for k, v in sorted(versions.items())),
            "format": "dictionary", "config": {"packages": versions}}


class Runtime:
    def __init__(self):
        self._lock = threading.Lock()
        self._loaded_kinds: set[str] = set()
        self.versions: dict[str, ModelVersion] = {}

    def ensure_kind_loaded(self, kind) -> None:
        if kind.name in self._loaded_kinds:
            return
        with self._lock:
            if kind.name not in self._loaded_kinds:
                kind.load()
                self._loaded_kinds.add(kind.name)

    def refresh(self, roles: tuple[str, ...]) -> None:
        """Load the active version of each role; cheap when nothing changed (one query)."""
        if not roles:
            return
        active = {v.role: v for v in ModelVersion.objects.filter(role__in=roles, status=ModelVersion.Status.ACTIVE)}
        if ModelVersion.Role.CONCEPTS in roles and ModelVersion.Role.CONCEPTS not in active:
            from medassist.registry.services import model_version_register

            active[ModelVersion.Role.CONCEPTS] = model_version_register(**_builtin_concepts_version())
        for role, version in active.items():
            current = self.versions.get(role)
            if current is None or current.pk != version.pk:
                log.info("model version active", extra={"role": role, "version": version.label})
                self.versions[role] = version
        missing = [r for r in roles if r not in self.versions]
        if missing:
            raise RuntimeError(f"no active model version for role(s) {', '.join(missing)}; "
                               "register one and promote it (Django admin, Model versions)")

    def version_label(self, role: str) -> str:
        return self.versions[role].label


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime
