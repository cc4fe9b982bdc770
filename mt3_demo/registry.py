"""The models this demo knows: one adapter module per model, each exposing a ``SPEC``
(:class:`~mt3_demo.models.base.ModelSpec`), imported here and nowhere else.

A broken adapter must not take the app down: :func:`load_registry` reports its import error and the
model shows as unavailable. The manager receives the specs (``ModelManager(specs=...)``), so tests
and other hosts can hand it their own.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Mapping

from .models.base import ModelSpec
from .options import OptionError

log = logging.getLogger(__name__)

# Adapter modules, in the order the UI lists them. Each exposes SPEC (a package: in its adapter.py).
ADAPTER_MODULES = [
    "mt3_demo.models.transkun",
    "mt3_demo.models.mt3",
    "mt3_demo.models.mr_mt3",
    "mt3_demo.models.yourmt3",
]
DEFAULT_MODEL = "transkun"  # the embedded default: its weights ship with its wheel


class UnknownModel(OptionError):
    """A model id that is not in the registry (a usage error: the CLI exits with 2)."""


def load_registry() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """Import every adapter. Returns (specs by id, import errors by module)."""
    specs: dict[str, ModelSpec] = {}
    errors: dict[str, str] = {}
    for name in ADAPTER_MODULES:
        try:
            module = importlib.import_module(name)
            if not hasattr(module, "SPEC"):  # a model package keeps its SPEC in adapter.py
                module = importlib.import_module(name + ".adapter")
            spec = module.SPEC
            specs[spec.id] = spec
        except Exception as e:  # noqa: BLE001 - reported, not raised
            errors[name] = f"{type(e).__name__}: {e}"
            log.warning("adapter %s failed to import: %s", name, e)
    return specs, errors


def spec_of(specs: dict[str, ModelSpec], model_id: str) -> ModelSpec:
    """``specs[model_id]``, or :class:`UnknownModel` naming the known ids."""
    try:
        return specs[model_id]
    except KeyError:
        known = ", ".join(specs) or "none"
        raise UnknownModel(f"Unknown model '{model_id}'. Known models: {known}.") from None


def default_selection(model_ids: list[str], avail: Mapping[str, Any]) -> list[str]:
    """The models a page starts with: the MT3-family ones that are ready (``avail``: model id ->
    :class:`~mt3_demo.availability.Availability`), then the embedded default; the default alone
    when none is (every manager's rule: local and Ray)."""
    ready = [m for m in model_ids if m != DEFAULT_MODEL and avail[m].status == "ready"]
    return ready + [DEFAULT_MODEL] if ready else [DEFAULT_MODEL]
