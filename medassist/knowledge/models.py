"""Knowledge tables: concepts, documents, which concepts each document mentions, and co-occurrence.

``Concept`` rows are identified by a prefixed vocabulary id ("MESH:D009203", "DOID:9970",
"DRUGBANK:DB00331") so that ids from different vocabularies never collide.  ``Cooccurrence``
holds every concept-pair association the system ranks with: the HSDN symptom -> disease matrix
(diagnosis), MEDLINE-wide disease-disease statistics and the co-occurrence graph of our own corpus
(hypothesis generation).  All writes go through ``importers.py``; nothing here has behaviour.
"""
from django.conf import settings
from django.db import models
from django.db.models import Q


class Concept(models.Model):
    class Vocabulary(models.TextChoices):
        MESH = "mesh", "MeSH"
        HPO = "hpo", "HPO"
        ICD10CM = "icd10cm", "ICD-10-CM"
        DOID = "doid", "Disease Ontology"
        DRUGBANK = "drugbank", "DrugBank"

    id = models.CharField(primary_key=True, max_length=64, help_text='vocabulary prefix + code, e.g. "MESH:D009203"')
    vocabulary = models.CharField(max_length=16, choices=Vocabulary.choices, db_index=True)
    code = models.CharField(max_length=48, help_text="the id inside its vocabulary, e.g. D009203")
    name = models.CharField(max_length=255)
    # Kept by the importers (no save() logic): an indexed exact match is what name lookups need,
    # and it works the same on SQLite and Postgres, unlike a functional index used through iexact.
    name_lower = models.CharField(max_length=255, db_index=True, editable=False)
    synonyms = models.JSONField(default=list, blank=True)
    semantic_group = models.CharField(max_length=64, blank=True, db_index=True,
                                      help_text='from the first MeSH tree number, e.g. "Diseases"')
    tree_numbers = models.JSONField(default=list, blank=True)
    # Where the row's name came from.  The importers let a better source overwrite a worse one
    # (the MeSH vocabulary file beats a heading or a data set, which beat dictionary extraction,
    # whose ids are often wrong); see corpus.SOURCE_RANK.
    source = models.CharField(max_length=32, blank=True, help_text="what created or last named this row")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.id} {self.name}"


class Document(models.Model):
    class Source(models.TextChoices):
        PUBMEDQA = "pubmedqa", "PubMedQA"
        MEDLINE = "medline", "MEDLINE"
        JOB = "job", "literature job"

    class Visibility(models.TextChoices):
        PRIVATE = "private", "its owner only"
        SHARED = "shared", "every user"

    # NULL for documents without a PMID; a unique constraint never treats two NULLs as equal.
    # Unique per owner (constraints below): the same PMID from two owners is two documents.
    pmid = models.CharField(max_length=20, null=True, blank=True)
    title = models.TextField(blank=True)
    abstract = models.TextField(blank=True)
    year = models.PositiveSmallIntegerField(null=True, blank=True, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    concepts = models.ManyToManyField(Concept, through="DocumentConcept", related_name="documents")
    # Access control (issue 13, shared corpus): imported documents have no owner and are shared; a job's
    # documents belong to the job's owner and are private unless they hold knowledge.share_document.
    # Every selector filters through ``visibility.visible_documents``.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="corpus_documents")
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.PRIVATE)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["pmid"], condition=Q(owner__isnull=True), name="unique_pmid_unowned"),
            models.UniqueConstraint(fields=["owner", "pmid"], condition=Q(owner__isnull=False),
                                    name="unique_pmid_per_owner"),
        ]
        indexes = [models.Index(fields=["visibility", "owner"], name="document_visibility_owner")]
        permissions = [("share_document", "Can add documents every user sees to the corpus")]

    def __str__(self) -> str:
        return f"PMID {self.pmid}" if self.pmid else f"document {self.pk}"


class DocumentConcept(models.Model):
    # No index of its own: the unique (document, concept) index already starts with it.
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="concept_links", db_index=False)
    concept = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="document_links")
    count = models.PositiveIntegerField(default=1, help_text="mentions in the text (at least 1 for a MeSH heading)")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["document", "concept"], name="unique_concept_per_document")]

    def __str__(self) -> str:
        return f"{self.document_id} -> {self.concept_id} x{self.count}"


class Cooccurrence(models.Model):
    """One association between two concepts, from one source, for one year or all years.

    Undirected pairs are stored once, with ``concept_a_id < concept_b_id``.  Directed pairs
    (HSDN: symptom -> disease) set ``directed`` and keep a = symptom, b = disease.

    ``year`` 0 means "all years".  It is not NULL on purpose: a unique constraint treats NULLs
    as distinct (SQLite always, Postgres unless NULLS NOT DISTINCT), so a NULL year would let a
    re-import insert a second all-years row instead of updating the first.
    """

    class Source(models.TextChoices):
        HSDN = "hsdn", "HSDN symptom-disease"
        MEDLINE = "medline-cooccurrence", "MEDLINE disease-disease"
        CORPUS = "corpus", "our corpus"

    ALL_YEARS = 0

    # No index of its own: the unique (concept_a, concept_b, year, source) index already starts with it,
    # and one index fewer to maintain is what bulk imports feel.
    concept_a = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+", db_index=False)
    concept_b = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+", db_index=False)
    directed = models.BooleanField(default=False)
    year = models.PositiveSmallIntegerField(default=ALL_YEARS, help_text="0 = all years")
    source = models.CharField(max_length=24, choices=Source.choices)
    count = models.PositiveIntegerField(help_text="documents that mention both")
    # tf-idf (hsdn), odds ratio (medline-cooccurrence), document count (corpus).  NULL where the
    # source's value is not a finite number (infinite odds ratios): Infinity is not valid JSON.
    score = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="the rest of the source row")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["concept_a", "concept_b", "year", "source"], name="unique_cooccurrence"),
        ]
        indexes = [
            # Neighbours of a concept on the b side (the unique index serves the a side); also the
            # index the foreign key would otherwise get.
            models.Index(fields=["concept_b", "source", "year"], name="cooc_b_source_year"),
        ]

    def __str__(self) -> str:
        arrow = "->" if self.directed else "--"
        when = "all years" if self.year == self.ALL_YEARS else self.year
        return f"{self.concept_a_id} {arrow} {self.concept_b_id} ({self.source}, {when})"


class DiagnosisDisease(models.Model):
    """A disease of the diagnosis ranker's universe: one concept (MeSH where one exists) with every code
    the crosswalks join to it (ICD-9-CM, ICD-10-CM, DOID, UMLS, SNOMED) and its NHAMCS visit counts."""

    concept = models.OneToOneField(Concept, primary_key=True, on_delete=models.CASCADE, related_name="diagnosis_disease")
    xrefs = models.JSONField(default=list, blank=True, help_text='other codes, e.g. ["ICD9CM:486", "DOID:552"]')
    synonyms = models.JSONField(default=list, blank=True)
    visits = models.PositiveIntegerField(default=0, help_text="NHAMCS 2010 ED visits with this diagnosis")
    visits_weighted = models.FloatField(default=0.0, help_text="the same, in national visits (PATWT)")
    strata = models.JSONField(default=dict, blank=True, help_text='visits per "age band|sex"')


class DiagnosisFinding(models.Model):
    """A finding of the diagnosis vocabulary with the source codes merged into it (RFV codes, DDXPlus
    evidences, ...), its other names and the findings it also counts as."""

    concept = models.OneToOneField(Concept, primary_key=True, on_delete=models.CASCADE, related_name="diagnosis_finding")
    codes = models.JSONField(default=list, blank=True)
    synonyms = models.JSONField(default=list, blank=True)
    implies = models.JSONField(default=list, blank=True)


class DiagnosisAssociation(models.Model):
    """(disease, finding, source, weight, evidence count): every source the diagnosis ranker combines.

    ``weight`` is P(finding | disease) where the source measures it (NHAMCS: the share of the disease's
    visits giving the finding as a reason), 1 for a presence-only link (HSDN top-10, DBpedia, DO,
    DDXPlus), or what an imported file says; ``count`` is the evidence behind it (visits, or 1)."""

    disease = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+", db_index=False)
    finding = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=24, db_index=True)
    weight = models.FloatField()
    count = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["disease", "finding", "source"], name="unique_diagnosis_association")]

    def __str__(self) -> str:
        return f"{self.disease_id} -> {self.finding_id} ({self.source}, {self.weight:.3f})"
