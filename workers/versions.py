"""Which model versions are active, loaded into this worker process: where the database meets the runtime.

One ``Runtime`` per process (``get_runtime()``), warmed in ``worker_process_init`` so that every
pool child loads its models once, before its first task. ``refresh(roles)`` is the cheap per-task
check (one small query): when an admin promotes another version, the next task loads it, with no
restart. Loading goes through ``workers.runtime.store.load_engine`` (checksum verified first), which
knows no database: it reads the version row's plain fields and takes the thread count as an argument.
"""
from __future__ import annotations

import logging
import threading

from django.conf import settings

from medassist.registry.models import ModelVersion

log = logging.getLogger(__name__)


def _builtin_concepts_version() -> dict:
    """The concept dictionaries are versioned by the packages that ship them."""
    from medassist.knowledge.concepts import dictionary_versions

    versions = dictionary_versions()
    return {"role": ModelVersion.Role.CONCEPTS, "name": "+".join(f"{k}=={v}" for k, v in sorted(versions.items())),
            "format": "dictionary", "config": {"packages": versions}}


def _identity(version: ModelVersion) -> tuple:
    # More than the primary key: a recreated database can reuse ids for other artifacts.
    return version.pk, version.name, version.format, version.checksum, version.artifact_path


class Runtime:
    def __init__(self):
        self._lock = threading.Lock()
        self._loaded_kinds: set[str] = set()
        self.versions: dict[str, ModelVersion] = {}
        self.engines: dict[str, object] = {}

    def ensure_kind_loaded(self, kind) -> None:
        if kind.name in self._loaded_kinds:
            return
        with self._lock:
            if kind.name not in self._loaded_kinds:
                kind.load()
                self._loaded_kinds.add(kind.name)

    def refresh(self, roles) -> None:
        """Make the active version of each role the loaded one; one query when nothing changed."""
        roles = tuple(roles)
        if not roles:
            return
        active = {v.role: v for v in ModelVersion.objects.filter(role__in=roles, status=ModelVersion.Status.ACTIVE)}
        if ModelVersion.Role.CONCEPTS in roles and ModelVersion.Role.CONCEPTS not in active:
            from medassist.registry.services import model_version_register

            active[ModelVersion.Role.CONCEPTS] = model_version_register(**_builtin_concepts_version())
        missing = [r for r in roles if r not in active]
        if missing:
            raise RuntimeError(f"no active model version for role(s) {', '.join(missing)}: run "
                               "`python manage.py models_prepare`, or register a model and promote it")
        for role, version in active.items():
            current = self.versions.get(role)
            if current is not None and _identity(current) == _identity(version):
                continue
            if role != ModelVersion.Role.CONCEPTS:
                from workers.runtime.store import load_engine

                # raises ArtifactError with the version's name
                self.engines[role] = load_engine(version, threads=settings.MEDASSIST_TORCH_THREADS)
            log.info("model version loaded", extra={"role": role, "version": version.label,
                                                    "previous": current.label if current else None})
            self.versions[role] = version

    def version_label(self, role: str) -> str:
        return self.versions[role].label

    def engine(self, role: str):
        return self.engines[role]

    def warm(self) -> None:
        """Load whatever model versions are active now (worker start); missing roles load lazily."""
        roles = [r for r in (ModelVersion.Role.EMBEDDER, ModelVersion.Role.GENERATOR, ModelVersion.Role.ANSWER_EVIDENCE)
                 if ModelVersion.objects.filter(role=r, status=ModelVersion.Status.ACTIVE).exists()]
        try:
            self.refresh(roles)
        except Exception:
            # A broken artifact must not crash the worker: tasks that need it fail with the reason.
            log.exception("could not load the active model versions at start")


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime
