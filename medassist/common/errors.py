"""One error shape for the API: ``{"detail": ..., "errors": {field: [messages]}}``, never a 500 for bad input."""
from django.http import JsonResponse
from django.views import defaults
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django's 500 handling (and logs) take over
    data = response.data
    if isinstance(data, dict) and "detail" in data and len(data) == 1:
        response.data = {"detail": str(data["detail"])}
    elif isinstance(data, dict):
        response.data = {"detail": "The request is invalid; see errors.", "errors": data}
    elif isinstance(data, list):
        response.data = {"detail": " ".join(str(d) for d in data)}
    return response


def not_found(request, exception=None):
    """handler404: under /api/ the same JSON shape as every other API error (a path that matches no
    route, e.g. a job id that is not a UUID); elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
