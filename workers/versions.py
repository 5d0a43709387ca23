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
from django.db import transaction

from medassist.registry.models import ModelVersion

log = logging.getLogger(__name__)


def _builtin_concepts_version() -> dict:
    """The built-in concept extractor as a ``concepts`` model version: its name says the extractor's recipe,
    the dictionary packages' versions and the checksums of the data it reads (``concepts.extractor_version``),
    so a changed recipe is a new version. (Recipe 1 keeps its old name: the package versions alone.)"""
    from medassist.knowledge.concepts import extractor_version

    return {"role": ModelVersion.Role.CONCEPTS, **extractor_version()}


_builtin_concepts_seen: tuple | None = None  # (built-in version name, active version) this process checked last


def _builtin_concepts_active(active: ModelVersion | None) -> ModelVersion:
    """The ``concepts`` version to use, after registering the built-in extractor's current version (checked
    once per process and active version: no query while neither changes). It becomes active when no
    version is, or when it is new to the database while an earlier built-in extractor is active: a
    deployment that changes the recipe switches once, audited, and a later rollback (to any version)
    stays, because the version is no longer new."""
    global _builtin_concepts_seen
    builtin = _builtin_concepts_version()
    if active is not None and _builtin_concepts_seen == (builtin["name"], _identity(active)):
        return active
    from medassist.registry.services import model_version_promote, model_version_register

    with transaction.atomic():  # registered and promoted together: a failure in between leaves neither
        version = model_version_register(**builtin)  # active at once when the role has none
        # Never active before (promoted_at empty): new to this deployment. A version that was active and
        # was rolled back from has promoted_at set, so a rollback stays.
        new = version.promoted_at is None and version.status == ModelVersion.Status.CANDIDATE
        if new and active is not None and active.pk != version.pk and active.format == builtin["format"]:
            # Dictionary versions carry no evaluation scores: the change is forced, with its reason, on purpose.
            version = model_version_promote(version=version, force=True,
                                            reason=f"the built-in concept extractor changed (was {active.label})")
    chosen = version if version.status == ModelVersion.Status.ACTIVE else active
    _builtin_concepts_seen = (builtin["name"], _identity(chosen))
    return chosen


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
        if ModelVersion.Role.CONCEPTS in roles:
            active[ModelVersion.Role.CONCEPTS] = _builtin_concepts_active(active.get(ModelVersion.Role.CONCEPTS))
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
