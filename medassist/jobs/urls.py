from django.urls import path

from . import apis

urlpatterns = [
    path("jobs/", apis.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/<uuid:job_id>/", apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", apis.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/results/", apis.JobResultsApi.as_view(), name="job-results"),
    path("jobs/<uuid:job_id>/results.jsonl", apis.JobResultsJsonlApi.as_view(), name="job-results-jsonl"),
    path("jobs/<uuid:job_id>/results.csv", apis.JobResultsCsvApi.as_view(), name="job-results-csv"),
]
