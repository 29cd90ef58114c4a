"""Bounds of the values the service's API takes: ids, moments, lengths.

Every id is a positive 64-bit integer (SQLite and PostgreSQL store no larger one), every
moment lies between the years :data:`MIN_YEAR` and :data:`MAX_YEAR`, so date arithmetic
and SQL never overflow on what a client sends; anything else answers 422 naming the field.
Pure logic: standard library and pydantic only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

#: the largest id any table holds (a signed 64-bit integer)
MAX_ID = 2**63 - 1
MIN_YEAR = 2000
MAX_YEAR = 2200
#: the longest free text (names, types, queries) the API accepts where no other rule says
MAX_TEXT = 255


def in_years(value: datetime) -> datetime:
    """``value`` if it lies within the years the service books and reports on."""
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(
            f"{value.isoformat()} is out of range: give a moment between the years "
            f"{MIN_YEAR} and {MAX_YEAR}"
        )
    return value


#: a database id: 1 .. 2**63-1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
#: a moment with a UTC offset, between MIN_YEAR and MAX_YEAR
Moment = Annotated[AwareDatetime, AfterValidator(in_years)]
