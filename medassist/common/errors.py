"""One error shape for the API: ``{"detail": ..., "errors": {field: [messages]}}``, never a 500 for bad input."""
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
