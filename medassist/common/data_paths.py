"""Where the real data sets live: one table of names, resolved under one setting.

Every reader of the shared data (importers, the diagnosis knowledge, training, benchmarks and
evaluations) asks here, so a moved file is renamed in one place. ``MEDASSIST_SHARED_DATA`` is the
folder described in ``../shared/data/README.md``; ``MEDASSIST_KNOWLEDGE_DATA`` (default: the same
folder) is where the diagnosis knowledge is read at serve time.
"""
from __future__ import annotations

from pathlib import Path

# name -> path under the data folder. The first five are the importers' sources (``DEFAULT_PATHS``).
SHARED_FILES: dict[str, str] = {
    "mesh": "mesh-2015/tree-numbers.tsv",
    "hsdn": "hsdn-symptoms-disease/symptoms-DO.tsv",
    "cooccurrence": "medline-cooccurrence/disease-disease-cooccurrence.tsv",
    "pubmedqa": "pubmedqa/pqal_train.json",
    "medline": "medline-sample/medline16n0902.xml.gz",
    "mesh_terms": "mesh-2015/terms.tsv",
    "mesh_symptoms": "mesh-2015/symptoms.tsv",
    "doid_to_mesh": "medline-cooccurrence/DO-slim-to-mesh.tsv",
    "abbreviations": "clinical-abbreviations",
    "discoveries": "medline-discoveries/annotated-relations.tsv",
    "ner_gold": "ner-gold",
    "ddx_knowledge": "ddx-knowledge",
}
IMPORTER_SOURCES = ("mesh", "hsdn", "cooccurrence", "pubmedqa", "medline")


class SharedDataMissing(FileNotFoundError):
    """A shared data file is not where the settings say."""


def shared_data_root() -> Path:
    from django.conf import settings

    return Path(settings.MEDASSIST_SHARED_DATA)


def knowledge_data_root() -> Path:
    from django.conf import settings

    return Path(settings.MEDASSIST_KNOWLEDGE_DATA)


def shared_path(name: str, *, root: Path | None = None, must_exist: bool = False) -> Path:
    """The path of the shared data set ``name`` (a key of ``SHARED_FILES``) under ``root``
    (default: ``MEDASSIST_SHARED_DATA``); ``must_exist`` raises a ``SharedDataMissing`` that says
    which setting moves it."""
    path = (Path(root) if root is not None else shared_data_root()) / SHARED_FILES[name]
    if must_exist and not path.exists():
        raise SharedDataMissing(f"shared data not found at {path} (set MEDASSIST_SHARED_DATA)")
    return path


def knowledge_path(name: str) -> Path:
    """The path of ``name`` under ``MEDASSIST_KNOWLEDGE_DATA`` (the serve-time diagnosis knowledge)."""
    return shared_path(name, root=knowledge_data_root())
