from django.urls import path

from . import apis

urlpatterns = [
    path("models/", apis.ModelVersionListApi.as_view(), name="model-list"),
    path("models/rollback/", apis.ModelVersionRollbackApi.as_view(), name="model-rollback"),
    path("models/<int:version_id>/", apis.ModelVersionDetailApi.as_view(), name="model-detail"),
    path("models/<int:version_id>/promote/", apis.ModelVersionPromoteApi.as_view(), name="model-promote"),
]
