"""The portal's URLs, mounted under /portal/ (config/urls.py)."""
from django.urls import path

from . import views

app_name = "portal"

urlpatterns = [
    path("", views.jobs, name="jobs"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("jobs/new/", views.job_new, name="job-new"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job"),
    path("jobs/<uuid:job_id>/progress/", views.job_progress_json, name="job-progress"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel_view, name="job-cancel"),
    path("jobs/<uuid:job_id>/items/<int:index>/", views.job_item, name="job-item"),
    path("jobs/<uuid:job_id>/results.<str:fmt>", views.job_download, name="job-download"),
    path("diagnosis/", views.diagnosis, name="diagnosis"),
    path("models/", views.models_page, name="models"),
]
