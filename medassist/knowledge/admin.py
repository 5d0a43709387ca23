"""Django admin for the knowledge tables: view-only (the importers are the only writers), searchable.

Foreign keys show as raw ids and counts are not computed on the large tables: a select box or a
COUNT(*) over 27,000 concepts or 100,000s of co-occurrences would make every page slow.
"""
from django.contrib import admin

from .models import Concept, Cooccurrence, Document, DocumentConcept


class ViewOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Concept)
class ConceptAdmin(ViewOnlyAdmin):
    list_display = ("id", "name", "vocabulary", "semantic_group", "source")
    list_filter = ("vocabulary", "semantic_group", "source")
    search_fields = ("=id", "name_lower", "code")


class DocumentConceptInline(admin.TabularInline):
    model = DocumentConcept
    fields = ("concept", "count")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Document)
class DocumentAdmin(ViewOnlyAdmin):
    list_display = ("id", "pmid", "title", "year", "source", "owner", "visibility", "created_at")
    list_filter = ("source", "visibility", "year")  # owner/visibility: issue 13, shared corpus
    search_fields = ("=pmid", "title")
    raw_id_fields = ("owner",)
    list_select_related = ("owner",)
    inlines = [DocumentConceptInline]


@admin.register(DocumentConcept)
class DocumentConceptAdmin(ViewOnlyAdmin):
    list_display = ("document", "concept", "count")
    list_filter = ("document__source", "concept__semantic_group")
    search_fields = ("=document__pmid", "=concept__id", "concept__name_lower")
    list_select_related = ("document", "concept")
    raw_id_fields = ("document", "concept")


@admin.register(Cooccurrence)
class CooccurrenceAdmin(ViewOnlyAdmin):
    list_display = ("concept_a", "concept_b", "directed", "source", "year", "count", "score")
    list_filter = ("source", "directed", "year")
    search_fields = ("=concept_a__id", "=concept_b__id", "concept_a__name_lower", "concept_b__name_lower")
    list_select_related = ("concept_a", "concept_b")
    raw_id_fields = ("concept_a", "concept_b")
    ordering = ("source", "-score")
