"""Input and output shapes of the jobs API (parsing is in the views, validation in the services)."""
from rest_framework import serializers
from rest_framework.reverse import reverse

from .models import Job, JobItem
from .selectors import job_progress


class JobSubmitSerializer(serializers.Serializer):
    """Documents the submission body (JSON, or multipart with ``file``); validated by ``job_validate``."""

    kind = serializers.CharField(help_text="job kind, e.g. literature")
    items = serializers.ListField(child=serializers.JSONField(), required=False,
                                  help_text="the inputs; for literature, {text, title?, pmid?, id?} or plain strings")
    params = serializers.JSONField(required=False, help_text="kind-specific parameters: a JSON object (in a multipart "
                                                            "upload, that object as a string); see <Kind>Params")
    file = serializers.FileField(required=False,
                                 help_text="instead of items: JSONL, CSV/TSV, or PubMed/MEDLINE XML (optionally gzipped)")


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    processed = serializers.IntegerField()
    remaining = serializers.IntegerField()
    percent = serializers.FloatField()
    eta_seconds = serializers.FloatField(allow_null=True)


class JobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.get_username", default=None)  # None: the user was deleted (issue 13)
    progress = serializers.SerializerMethodField()
    model_version = serializers.CharField(source="model_version.label", default=None, allow_null=True)
    links = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "url", "kind", "status", "owner", "params", "source", "progress", "model_version",
                  "model_versions", "status_detail", "error", "created_at", "started_at", "finished_at", "links"]

    def _abs(self, name, job):
        return reverse(name, kwargs={"job_id": job.pk}, request=self.context.get("request"))

    def get_url(self, job) -> str:
        return self._abs("job-detail", job)

    def get_progress(self, job) -> dict:
        return ProgressSerializer(job_progress(job)).data

    def get_links(self, job) -> dict:
        return {"results": self._abs("job-results", job), "jsonl": self._abs("job-results-jsonl", job),
                "csv": self._abs("job-results-csv", job), "cancel": self._abs("job-cancel", job)}


class JobItemSerializer(serializers.ModelSerializer):
    ref = serializers.SerializerMethodField(help_text="the item's own identifiers, echoed from its input")

    class Meta:
        model = JobItem
        fields = ["index", "ref", "status", "result", "error", "duration_ms", "finished_at"]

    def get_ref(self, item) -> dict:
        return item_ref(item.input)


def item_ref(data) -> dict:
    """id / pmid / title of an input, when it has them: enough to match results to inputs."""
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in ("id", "pmid", "title") if data.get(key) not in (None, "")}
