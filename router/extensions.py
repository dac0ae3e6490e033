"""Routers added to the app beside the core ones (router/app.py includes each, in this order)."""

from __future__ import annotations

from fastapi import APIRouter

from router import browse

EXTENSION_ROUTERS: list[APIRouter] = [browse.router]
