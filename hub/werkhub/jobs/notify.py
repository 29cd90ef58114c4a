"""Notifications of finished runs: the notice text, and e-mail through SMTP when set up.

Notices are rows of the booking notifications table (kinds ``job_failed`` and
``job_succeeded``), written in the same transaction as the run's outcome and shown by
``GET /api/notifications`` and the hub pages. When ``jobs.smtp.host`` is set, the same
text is also mailed to the owner (standard library ``smtplib``).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any

log = logging.getLogger("werkhub.jobs.notify")


def notice_for(
    run: dict[str, Any], status: str, retrying: bool, notify_success: bool
) -> tuple[str, str] | None:
    """(kind, message) for a finished attempt, or None. A failure that will be retried
    is not announced; the last failed attempt is."""
    name = run["job_name"]
    if status == "succeeded":
        if not notify_success:
            return None
        return "job_succeeded", f"Job '{name}' (run {run['id']}) succeeded: the report is ready."
    if retrying:
        return None
    what = {"timed_out": "passed its deadline", "interrupted": "was interrupted"}.get(
        status, "failed"
    )
    attempts = f" after {run['attempt']} attempts" if run["attempt"] > 1 else ""
    error = (run.get("error") or "").strip().splitlines()
    reason = f": {error[-1][:300]}" if error else ""
    return "job_failed", f"Job '{name}' (run {run['id']}) {what}{attempts}{reason}"


class Mailer:
    """Sends notices by SMTP; a mail that cannot be sent is logged, never raised."""

    def __init__(self, smtp: Any) -> None:
        self.smtp = smtp

    @property
    def enabled(self) -> bool:
        return bool(self.smtp is not None and self.smtp.host)

    def address_of(self, user: str) -> str | None:
        return self.smtp.recipients.get(user) or (
            self.smtp.address_template.format(user=user) if self.smtp.address_template else None
        )

    def _password(self) -> str | None:
        if not self.smtp.password_file:
            return None
        return Path(self.smtp.password_file).read_text().strip()

    def send(self, user: str, subject: str, body: str) -> bool:
        to = self.address_of(user)
        if not self.enabled or not to:
            return False
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=20) as client:
                if self.smtp.starttls:
                    client.starttls(context=ssl.create_default_context())
                if self.smtp.user:
                    client.login(self.smtp.user, self._password() or "")
                client.send_message(message)
            return True
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("could not mail %s about a job: %s", user, exc)
            return False

    async def notify(self, user: str, kind: str, message: str, link: str = "") -> None:
        if not self.enabled:
            return
        subject = "werkhub: " + ("job failed" if kind == "job_failed" else "job succeeded")
        body = message + (f"\n\nReport: {link}\n" if link else "\n")
        await asyncio.to_thread(self.send, user, subject, body)
