"""A small Jupyter notebook as a dict, for job and report tests: code cells, the first one
tagged ``parameters`` for papermill when given."""

from __future__ import annotations

from typing import Any


def notebook(*cells: str, parameters: str = "") -> dict[str, Any]:
    def cell(source: str, tags: list[str] | None = None) -> dict[str, Any]:
        return {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": tags or []},
            "outputs": [],
            "source": source,
        }

    body = ([cell(parameters, ["parameters"])] if parameters else []) + [cell(c) for c in cells]
    return {
        "cells": body,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
