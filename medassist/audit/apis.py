"""Token rotation over the API: POST /api/v1/auth/token/rotate/ revokes the token the request came
with and returns a new one (shown once). With a session instead of a token, every token of the user
is revoked. Audited as ``token.rotate`` (tokens.py)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from knox.models import AuthToken
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from .services import client_ip
from .tokens import token_rotate


class TokenRotateApi(APIView):
    @extend_schema(request=None, responses={201: inline_serializer("RotatedToken", {
        "token": serializers.CharField(), "expiry": serializers.DateTimeField(allow_null=True)})})
    def post(self, request):
        current = request.auth if isinstance(request.auth, AuthToken) else None
        key, token = token_rotate(user=request.user, via="api", current=current, actor=request.user,
                                  ip=client_ip(request))
        return Response({"token": key, "expiry": token.expiry}, status=status.HTTP_201_CREATED)
