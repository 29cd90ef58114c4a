"""Plugin hook: site code that adjusts the JupyterHub config after werkhub applied its own."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from werkhub.config.schema import WerkhubConfig
from werkhub.errors import Misconfigured

ENTRY_POINT_GROUP = "werkhub.plugins"


class PluginError(Misconfigured, RuntimeError):
    pass


def _load(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"plugin '{spec}': cannot import {module_name} ({exc})") from exc
    func = getattr(module, attr or "werkhub_config", None)
    if not callable(func):
        raise PluginError(f"plugin '{spec}': no callable '{attr or 'werkhub_config'}'")
    return func


def apply_plugins(cfg: WerkhubConfig, c: Any) -> list[str]:
    """Call every installed (entry point) and configured plugin as ``func(cfg, c)``, in order."""
    applied = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(cfg, c)
        applied.append(ep.name)
    for spec in cfg.plugins:
        _load(spec)(cfg, c)
        applied.append(spec)
    return applied
