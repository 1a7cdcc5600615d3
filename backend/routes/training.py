"""Placeholder router, filled in by the training work (issue 3)."""

from fastapi import APIRouter

router = APIRouter()
