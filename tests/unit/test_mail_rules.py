"""The mail relay's rules without a server (router/mail_relay.py, router/mail_message.py, shards/mail.py):
which e-mails an outbox row causes, what a message carries, that a buyer's text cannot add a header,
and how each SMTP failure is classed — retried, dead at once, or ending the shard's round. The
end-to-end behaviour against a real SMTP server is tests/e2e/test_email.py."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

from cluster.settings import Settings
from router.mail_message import MailedTicket, cancelled_message, tickets_message
from router.mail_relay import MailRelay
from shards.mail import Holder, MailDelivery, plan_mail

pytestmark = pytest.mark.unit

SENDER = "Ticketing <tickets@ticketing.test>"
STARTS = datetime(2027, 5, 1, 20, 0, tzinfo=UTC)
T1, T2, T3 = (uuid.UUID(int=n) for n in (1, 2, 3))


def delivery(recipient: str = "ann@example.test", name: str | None = "Ann", topic: str = "order.confirmed",
             attempts: int = 0) -> MailDelivery:
    return MailDelivery(7, recipient, topic, uuid.UUID(int=9), uuid.UUID(int=8) if topic == "order.confirmed"
                        else None, name, (T1,), attempts, "Mail night", STARTS)


def test_an_order_is_mailed_once_per_holder_address_and_tickets_without_one_are_skipped() -> None:
    payload = {"order_id": str(uuid.UUID(int=8)), "ticket_ids": [str(T1), str(T2), str(T3)]}
    holders = {T1: Holder("Ann", "ann@example.test"), T2: Holder("Ann B.", "ann@example.test"),
               T3: Holder(None, None)}
    planned = plan_mail(7, "order.confirmed", uuid.UUID(int=9), payload, STARTS, holders)
    assert [(mail.recipient, mail.holder_name, mail.ticket_ids, mail.skipped) for mail in planned] == [
        ("ann@example.test", "Ann", (T1, T2), False), ("", None, (T3,), True)]
    # A checkout that named nobody: the buyer is a user id, there is no address to write to.
    (nobody,) = plan_mail(7, "order.confirmed", uuid.UUID(int=9), payload, STARTS, {})
    assert nobody.skipped and nobody.ticket_ids == (T1, T2, T3)
    (notice,) = plan_mail(8, "ticket.cancelled", uuid.UUID(int=9), {"ticket_id": str(T3)}, STARTS,
                          {T3: Holder("Cy", "cy@example.test")})
    assert (notice.recipient, notice.order_id, notice.ticket_ids) == ("cy@example.test", None, (T3,))


def parsed(message: EmailMessage) -> EmailMessage:
    """The message as a receiver reads it: serialised, then parsed again."""
    again = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(again, EmailMessage)
    return again


def test_a_tickets_message_carries_each_code_in_the_text_and_its_qr_png() -> None:
    ticket = MailedTicket(str(T1), "section floor", "TKT1.a-long-code" + "x" * 150, b"\x89PNG fake")
    message = parsed(tickets_message(SENDER, delivery(), 0, [ticket]))
    assert message["To"] == "Ann <ann@example.test>" and "tickets@ticketing.test" in message["From"]
    assert message["Subject"] == "Your tickets: Mail night"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert ticket.code in text and str(T1) in text and "Saturday 01 May 2027, 20:00 UTC" in text
    (attachment,) = message.iter_attachments()
    assert attachment.get_content_type() == "image/png" and attachment.get_content() == ticket.png
    # The same e-mail has the same Message-ID on every attempt: a duplicate can be recognised.
    assert tickets_message(SENDER, delivery(), 0, [ticket])["Message-ID"] == message["Message-ID"]


def test_a_cancellation_notice_names_the_ticket_and_the_refund() -> None:
    message = parsed(cancelled_message(SENDER, delivery(topic="ticket.cancelled"), 0))
    body = message.get_body(("plain",))
    assert body is not None
    assert message["Subject"] == "Cancelled: Mail night"
    assert str(T1) in body.get_content() and "refunded" in body.get_content()


@pytest.mark.parametrize(("recipient", "name"), [
    ("ann(comment)@example.test", "Ann"),  # reads back as another address
    ("ann@example.test\r\nBcc: spy@evil.test", "Ann"),  # a line break in the address
])
def test_an_address_that_would_go_elsewhere_is_refused(recipient: str, name: str) -> None:
    with pytest.raises(ValueError):
        tickets_message(SENDER, delivery(recipient, name), 0, [])


@pytest.mark.parametrize("name", ["Ann\r\nBcc: spy@evil.test", "Ann\nX-Injected: 1"])
def test_a_line_break_in_a_name_is_folded_and_adds_no_header(name: str) -> None:
    message = parsed(tickets_message(SENDER, delivery("ann@example.test", name), 0, []))
    assert message.get_all("Bcc") is None and message.get_all("X-Injected") is None
    (to,) = message["To"].addresses
    assert to.addr_spec == "ann@example.test" and to.display_name == " ".join(name.split())


class FailingSender:
    """Stands in for the SMTP server: raises `error` (or sends nothing) and counts the calls."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(message)


def relay(error: BaseException | None) -> tuple[MailRelay, FailingSender]:
    sender = FailingSender(error)
    settings = Settings(smtp_host="smtp.example.test", smtp_from=SENDER, mail_attempts_max=3,
                        mail_retry_base_s=10, mail_retry_max_s=25)
    return MailRelay(None, None, None, settings, sender), sender  # type: ignore[arg-type]


def attempt(error: BaseException | None, **overrides: Any) -> tuple[str, bool, str | None]:
    mail_relay, _ = relay(error)
    outcome = asyncio.run(mail_relay.attempt(0, delivery(topic="ticket.cancelled", **overrides)))
    return outcome.status, outcome.ends_round, outcome.error


def test_each_smtp_failure_is_retried_dead_or_ends_the_round() -> None:
    assert attempt(None) == ("sent", False, None)
    # The server answered this one message for now (451): retried later, the round goes on.
    assert attempt(aiosmtplib.SMTPDataError(451, "try later"))[:2] == ("pending", False)
    # ... for good (5xx on the recipient or the data): dead at once.
    refused = aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b.c")])
    assert attempt(refused)[:2] == ("dead", False)
    assert attempt(aiosmtplib.SMTPDataError(554, "spam"))[:2] == ("dead", False)
    # The server or the connection failed: retried, and the shard's round stops (the next would fail too).
    for error in (aiosmtplib.SMTPConnectError("refused"), aiosmtplib.SMTPException("STARTTLS not supported"),
                  aiosmtplib.SMTPAuthenticationError(535, "bad login"), TimeoutError(), ConnectionResetError()):
        assert attempt(error)[:2] == ("pending", True), error
    # Something unforeseen is still charged as an attempt (no row stalls the shard), and the round goes on.
    assert attempt(RuntimeError("unforeseen"))[:2] == ("pending", False)
    # The last allowed attempt is dead whatever the failure.
    assert attempt(aiosmtplib.SMTPDataError(451, "try later"), attempts=2)[0] == "dead"


def test_a_message_that_cannot_be_built_is_dead_and_nothing_is_sent() -> None:
    mail_relay, sender = relay(None)
    outcome = asyncio.run(mail_relay.attempt(0, delivery(recipient="eve@example.test\r\nBcc: spy@evil.test",
                                                         topic="ticket.cancelled")))
    assert outcome.status == "dead" and outcome.error is not None and outcome.error.startswith("message not built")
    assert sender.sent == [] and not outcome.ends_round


def test_retries_back_off_exponentially_up_to_the_maximum() -> None:
    mail_relay, _ = relay(None)
    assert [mail_relay.backoff_s(attempt) for attempt in (1, 2, 3, 4)] == [10, 20, 25, 25]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"smtp_host": "smtp.example.test"}, "smtp_host needs smtp_from"),
    ({"smtp_host": "smtp.example.test", "smtp_from": "not an address"}, "smtp_host needs smtp_from"),
    ({"mail_retry_base_s": 600.0, "mail_retry_max_s": 60.0}, "mail_retry_base_s must not exceed"),
    ({"smtp_starttls": "sometimes"}, "smtp_starttls"),
])
def test_e_mail_settings_that_cannot_work_refuse_to_start(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**overrides)


def test_e_mail_is_off_by_default_and_on_with_a_host_and_a_sender() -> None:
    assert Settings().smtp_host == "" and Settings().smtp_starttls == "auto" and Settings().smtp_tls_verify
    assert Settings(smtp_host="smtp.example.test", smtp_from=SENDER).smtp_port == 587
