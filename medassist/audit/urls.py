from django.urls import path

from . import apis

urlpatterns = [
    path("auth/token/rotate/", apis.TokenRotateApi.as_view(), name="token-rotate"),
]
