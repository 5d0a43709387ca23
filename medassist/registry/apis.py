"""The model-registry API under /api/v1/models/: list and read versions; users with the
``registry.promote_modelversion`` permission (given through a group; staff status alone is not enough,
the admin checks the same permission) promote and roll back.

Promotion is checked against the active version's evaluation scores (see ``services.compare_versions``);
every promotion, refusal and rollback is audited with actor and client IP by the services.
"""
from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from medassist.audit.services import client_ip

from .models import ModelVersion
from .serializers import ModelVersionSerializer, PromoteSerializer, RollbackSerializer
from .services import (
    PromotionRefused,
    RollbackImpossible,
    model_version_list,
    model_version_promote,
    model_version_rollback,
)

PROMOTE_PERMISSION = "registry.promote_modelversion"


class CanPromoteModelVersions(BasePermission):
    """The same permission the Django admin's promote/rollback actions check."""

    message = "Promoting and rolling back model versions needs the registry.promote_modelversion permission."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.has_perm(PROMOTE_PERMISSION))


def _invalid(errors: dict) -> Response:
    return Response({"detail": "The request is invalid; see errors.", "errors": errors}, status=status.HTTP_400_BAD_REQUEST)


class ModelVersionFilter(django_filters.FilterSet):
    class Meta:
        model = ModelVersion
        fields = ["role", "status"]


class ModelVersionListApi(generics.ListAPIView):
    """Every model version, by role, newest first (filters: role, status)."""

    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilter
    queryset = ModelVersion.objects.none()  # for the schema; get_queryset gives the rows

    def get_queryset(self):
        return model_version_list()


class ModelVersionDetailApi(APIView):
    @extend_schema(responses=ModelVersionSerializer)
    def get(self, request, version_id):
        version = get_object_or_404(model_version_list(), pk=version_id)
        return Response(ModelVersionSerializer(version).data)


class ModelVersionPromoteApi(APIView):
    """Make this version the active one of its role, if it has scores and scores no worse than the active one."""

    permission_classes = [CanPromoteModelVersions]

    @extend_schema(request=PromoteSerializer, responses={
        200: ModelVersionSerializer,
        400: OpenApiResponse(description="bad input, or force without a reason"),
        409: OpenApiResponse(description="refused: the candidate scores worse or has no scores; errors.metrics lists why"),
    })
    def post(self, request, version_id):
        version = get_object_or_404(model_version_list(), pk=version_id)
        params = PromoteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            version = model_version_promote(version=version, actor=request.user, ip=client_ip(request),
                                            **params.validated_data)
        except ValueError as exc:  # the only one: force without a reason
            return _invalid({"reason": [str(exc)]})
        except PromotionRefused as exc:
            return Response({"detail": f"Not promoted: {exc.summary}. Send force=true with a reason to promote "
                                       "it anyway.",
                             "errors": {"metrics": exc.comparison.worse}}, status=status.HTTP_409_CONFLICT)
        return Response(ModelVersionSerializer(version).data)


class ModelVersionRollbackApi(APIView):
    """Make the previously active version of a role active again (no metrics check)."""

    permission_classes = [CanPromoteModelVersions]

    @extend_schema(request=RollbackSerializer, responses={
        200: ModelVersionSerializer,
        400: OpenApiResponse(description="unknown role"),
        409: OpenApiResponse(description="the role has no previously active version"),
    })
    def post(self, request):
        params = RollbackSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            version = model_version_rollback(actor=request.user, ip=client_ip(request), **params.validated_data)
        except RollbackImpossible as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(ModelVersionSerializer(version).data)
