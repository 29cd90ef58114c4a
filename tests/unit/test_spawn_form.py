"""The spawn form: every input labelled, the booking end in local time, live availability."""

from __future__ import annotations

import re

from werkhub.spawners.options import options_form

IMAGES = {"base": "JupyterLab and scientific Python", "pytorch": "PyTorch"}
BOOKING = {
    "id": 7,
    "count": 2,
    "gpu_type": "H100",
    "end": "2026-11-21T13:00:00Z",
    "end_local": "Sat 21 Nov 14:00 (Europe/Berlin)",
    "simulated": False,
}


def test_booking_end_is_shown_in_local_time() -> None:
    html = options_form(IMAGES, "base", BOOKING, {"H100": 0, "L40S": 3})
    assert "My booking #7: 2 x H100 until Sat 21 Nov 14:00 (Europe/Berlin)" in html
    assert "2026-11-21T13:00:00Z" not in html
    assert re.search(r'id="gpu-booking" value="booking"\s+checked', html)


def test_every_input_has_a_label() -> None:
    html = options_form(IMAGES, "pytorch", None, {"L40S": 3})
    ids = set(re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html))
    labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))
    assert ids and ids <= labelled, ids - labelled
    named = re.findall(r'<(?:input|select)[^>]*\bname="([^"]+)"', html)
    assert len(named) == len(re.findall(r"<(?:input|select)\b", html))  # no unnamed field


def test_live_availability_and_disabled_choices() -> None:
    html = options_form(IMAGES, "base", None, {"L40S": 3, "H100": 0})
    assert "L40S (3 free now)" in html and "H100 (0 free now)" in html
    assert re.search(r'id="gpu-booking" value="booking"\s+disabled', html)
    assert "book on the calendar first" in html
    assert 'value="pytorch"' in html and 'value="base" selected' in html
    nothing_free = options_form(IMAGES, "base", None, {})
    assert re.search(r'id="gpu-on-demand"\s+value="on_demand"\s+disabled', nothing_free)
