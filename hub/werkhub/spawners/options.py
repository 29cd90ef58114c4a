"""Spawn options: the form a user sees and the validation of what comes back.

``user_options`` are untrusted: they arrive from the form or as the JSON body of a REST
spawn request. Both pass through :func:`parse_options`, which only knows the curated
image names and turns anything else into a :class:`SpawnOptionError` with a message for
the person (the spawner answers it as HTTP 400 before creating anything).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from werkhub.errors import Invalid

GpuChoice = Literal["auto", "booking", "on_demand", "cpu"]


class SpawnOptionError(Invalid, ValueError):
    """Refused spawn options; the message is meant for the user."""


class SpawnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1, max_length=128)
    #: auto: the running booking's GPUs if there is one, else CPU only
    gpu: GpuChoice = "auto"
    booking_id: int | None = Field(default=None, ge=1)
    gpu_type: str | None = Field(default=None, min_length=1, max_length=96)
    count: int = Field(default=1, ge=1, le=64)
    duration_minutes: int = Field(default=60, ge=15, le=24 * 60)

    @model_validator(mode="after")
    def _consistent(self) -> SpawnOptions:
        if self.gpu == "on_demand" and not self.gpu_type:
            raise ValueError("on-demand GPUs need a gpu_type")
        if self.gpu not in ("booking", "auto") and self.booking_id is not None:
            raise ValueError("booking_id only goes with gpu 'booking'")
        return self


def _flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Form posts arrive as {"key": ["value"]}; REST bodies as plain JSON values."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            if len(value) != 1:
                raise SpawnOptionError(f"option '{key}' must have one value")
            value = value[0]
        if value == "" and key in ("booking_id", "gpu_type"):
            continue
        flat[key] = value
    return flat


def parse_options(
    raw: Mapping[str, Any] | None, images: Sequence[str], default_image: str
) -> SpawnOptions:
    """Validate untrusted options against the curated catalog."""
    data = _flatten(raw or {})
    data.setdefault("image", default_image)
    try:
        options = SpawnOptions.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "options"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown option (allowed: {', '.join(SpawnOptions.model_fields)})"
            parts.append(f"{where}: {message}")
        raise SpawnOptionError("; ".join(parts)) from None
    if options.image not in images:
        raise SpawnOptionError(
            f"image '{options.image}' is not in the curated catalog (choose one of: "
            f"{', '.join(images)})"
        )
    return options


def options_form(
    images: Mapping[str, str],
    default_image: str,
    booking: Mapping[str, Any] | None,
    free_now: Mapping[str, int],
) -> str:
    """HTML of the spawn form: image, and how to get GPUs (with live availability)."""
    image_options = "".join(
        f'<option value="{escape(name)}"{" selected" if name == default_image else ""}>'
        f"{escape(name)}: {escape(text)}</option>"
        for name, text in images.items()
    )
    if booking:
        summary = (
            f"{booking['count']} x {escape(booking['gpu_type'])} until "
            f"{escape(str(booking.get('end_local', booking['end'])))}"
            + (" (simulated)" if booking.get("simulated") else "")
        )
        mine = f"My booking #{booking['id']}: {summary}"
    else:
        mine = "My booking (none active or starting soon: book on the calendar first)"
    free = "".join(
        f'<option value="{escape(t)}">{escape(t)} ({n} free now)</option>'
        for t, n in free_now.items()
    )
    return f"""
<div class="werkhub-spawn">
  <label for="werkhub-image" class="form-label">Image</label>
  <select id="werkhub-image" name="image" class="form-select">{image_options}</select>
  <fieldset class="mt-3">
    <legend class="h6">GPUs</legend>
    <div class="form-check">
      <input class="form-check-input" type="radio" name="gpu" id="gpu-booking" value="booking"
             {"checked" if booking else "disabled"}>
      <label class="form-check-label" for="gpu-booking">{mine}</label>
    </div>
    <div class="form-check">
      <input class="form-check-input" type="radio" name="gpu" id="gpu-on-demand"
             value="on_demand" {"" if free_now else "disabled"}>
      <label class="form-check-label" for="gpu-on-demand">On demand, if free now</label>
      <div class="row g-2 mt-1">
        <div class="col-sm-6">
          <label for="werkhub-gpu-type" class="form-label small">GPU type</label>
          <select id="werkhub-gpu-type" name="gpu_type" class="form-select form-select-sm">
            <option value="">choose a type</option>{free}</select>
        </div>
        <div class="col-sm-3">
          <label for="werkhub-count" class="form-label small">How many GPUs</label>
          <input id="werkhub-count" type="number" name="count" min="1" max="64" value="1"
                 class="form-control form-control-sm">
        </div>
        <div class="col-sm-3">
          <label for="werkhub-minutes" class="form-label small">For how many minutes</label>
          <input id="werkhub-minutes" type="number" name="duration_minutes" min="15"
                 max="1440" value="60" class="form-control form-control-sm">
        </div>
      </div>
    </div>
    <div class="form-check">
      <input class="form-check-input" type="radio" name="gpu" id="gpu-cpu" value="cpu"
             {"" if booking else "checked"}>
      <label class="form-check-label" for="gpu-cpu">CPU only</label>
    </div>
  </fieldset>
</div>
"""
