"""The e-mails the mail relay sends (`router.mail_relay`), built with the standard library's
``email.message.EmailMessage`` and its default policy.

Two kinds: a holder's tickets (``order.confirmed``: the text lists each ticket with its code, and
each ticket's QR code is attached as a PNG) and a cancellation notice (``ticket.cancelled``).

Nothing a buyer typed can add a header: the holder's name and address go into ``To`` as an
``Address``, which quotes the name and refuses a CR or LF (``ValueError``). A name's line breaks
(and runs of other whitespace) are folded into single spaces first — a name pasted over two lines is
still that holder's name, and they get their tickets — while an address must read back exactly as
the checkout stored it (a line break, a comment or a second address in it would change where the
e-mail goes). A `ValueError` here is deterministic — the same row fails the same way every time — so
the relay dead-letters that e-mail at once instead of retrying it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from shards.mail import MailDelivery

# The date line of every e-mail: the event's start, in UTC (events store no time zone of their own).
DATE_FORMAT = "%A %d %B %Y, %H:%M UTC"


@dataclass(frozen=True, slots=True)
class MailedTicket:
    """One ticket of a holder's e-mail: where it admits to, its signed code and that code's QR PNG."""

    ticket_id: str
    place: str
    code: str
    png: bytes


def display_name(name: str | None) -> str:
    """A holder's name as the ``To`` header shows it: on one line."""
    return " ".join((name or "").split())


def _starts(starts_at: datetime) -> str:
    return starts_at.astimezone(UTC).strftime(DATE_FORMAT)


def _greeting(delivery: MailDelivery) -> str:
    return f"Hello {delivery.holder_name}," if delivery.holder_name else "Hello,"


def _message_id(shard_id: int, delivery: MailDelivery, sender: Address) -> str:
    """The same on every attempt at one e-mail, so a mail client can drop a duplicate."""
    digest = hashlib.blake2b(delivery.recipient.encode(), digest_size=8).hexdigest()
    return f"<ticketing.{shard_id}.{delivery.outbox_id}.{digest}@{sender.domain or 'localhost'}>"


def _envelope(sender: str, delivery: MailDelivery, shard_id: int, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = Address(display_name=display_name(delivery.holder_name), addr_spec=delivery.recipient)
    (address,) = message["To"].addresses
    if address.addr_spec != delivery.recipient:
        raise ValueError("the recipient's address does not read back as the checkout stored it")
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now().astimezone())
    message["Message-ID"] = _message_id(shard_id, delivery, message["From"].addresses[0])
    return message


def tickets_message(sender: str, delivery: MailDelivery, shard_id: int, tickets: list[MailedTicket]) -> EmailMessage:
    """A holder's tickets of one order: codes in the text, one QR PNG attached per ticket."""
    message = _envelope(sender, delivery, shard_id, f"Your tickets: {delivery.event_title}")
    lines = [_greeting(delivery), "",
             f"Here {'is your ticket' if len(tickets) == 1 else f'are your {len(tickets)} tickets'} for "
             f"{delivery.event_title}, {_starts(delivery.event_starts_at)}.", ""]
    for ticket in tickets:
        lines += [f"Ticket {ticket.ticket_id} ({ticket.place})", f"Code: {ticket.code}", ""]
    lines += ["Show each ticket's QR code (attached) at the entrance; a ticket admits once.",
              f"Order {delivery.order_id}."]
    message.set_content("\n".join(lines) + "\n")
    for ticket in tickets:
        message.add_attachment(ticket.png, maintype="image", subtype="png", filename=f"ticket-{ticket.ticket_id}.png")
    return message


def cancelled_message(sender: str, delivery: MailDelivery, shard_id: int) -> EmailMessage:
    """A notice that a holder's ticket was cancelled (its event was) and refunded."""
    message = _envelope(sender, delivery, shard_id, f"Cancelled: {delivery.event_title}")
    tickets = ", ".join(str(ticket_id) for ticket_id in delivery.ticket_ids)
    message.set_content("\n".join([
        _greeting(delivery), "",
        f"{delivery.event_title}, {_starts(delivery.event_starts_at)}, was cancelled by its organizer.",
        f"Your ticket {tickets} is cancelled and no longer admits; its price is refunded to the payment "
        "method it was bought with.", ""]))
    return message
