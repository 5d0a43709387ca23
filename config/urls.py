"""URL map: API under /api/v1/, admin, OpenAPI schema and docs, health and metrics."""
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from medassist.common.views import health, metrics

urlpatterns = [
    path("api/v1/", include("medassist.jobs.urls")),
    path("api/v1/", include("medassist.registry.urls")),
    path("api/v1/", include("medassist.audit.urls")),  # token rotation (issue 13)
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("portal/", include("medassist.portal.urls")),  # the researchers' web portal (issue 14)
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    path("metrics", metrics, name="metrics"),
]

# JSON 404s under /api/ (issue 12, fuzzing): a path no route matches gets the API's error shape.
handler404 = "medassist.common.errors.not_found"
