"""The mail relay: e-mails ticket holders their tickets, and tells them when a ticket is cancelled.

Every router process runs one (a background task of the app's lifespan) when ``smtp_host`` is set;
with it empty the relay never starts and nothing is read from the outbox for e-mail. Every
`mail_relay_interval_s` it takes each shard in turn; only the relay holding the shard's advisory
lock (`shards.mail.MAIL_LOCK_KEY`, not the webhook relay's) works on it, so a shard has one mailer
at a time. A round plans, then sends (`shards.mail` says how the plan is kept in the database):

- **plan**: the next `mail_relay_batch_rows_max` outbox rows, in commit order, become e-mails: an
  ``order.confirmed`` row one per holder address, carrying that address's tickets (tickets whose
  checkout named no holder have no address — the buyer is only a user id — and are counted
  ``skipped``); a ``ticket.cancelled`` row a notice to its holder's address.
- **send**: at most as many due e-mails, oldest outbox row first, one SMTP conversation each
  (``aiosmtplib``; STARTTLS per `smtp_starttls`, login when `smtp_username` is set, the whole
  conversation within `smtp_timeout_s`). A ticket's code is signed as ``GET /v1/tickets/{id}`` signs
  it, from the order the shard actor reads back (``GetOrder``), and its QR PNG is rendered by
  ``app.state.ticket_codes``.

Outcomes, in ``mail_deliveries`` and ``ticketing_emails_total{result}``: ``sent``; ``failed`` (a
4xx answer, a refused or dropped connection, a timeout, a server that cannot STARTTLS when it is
required, the actor not answering), retried after `mail_retry_base_s` × 2^(attempt-1) (at most
`mail_retry_max_s`); ``dead`` when the last of `mail_attempts_max` attempts failed, at once when the
server refused the recipient or the message for good (5xx), or when the message cannot be built
from the row (a header it would break: `router.mail_message`). A failure that is the server's, the
connection's or the shard actor's rather than one message's ends the shard's round, so an SMTP
server that is down costs one attempt per round, not one per waiting e-mail.

At least once, not exactly once: a relay that dies between the server's acceptance and recording
it sends that e-mail again (with the same Message-ID). A delivery recorded sent is never sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, NamedTuple
from uuid import UUID

import aiosmtplib
from prometheus_client import Counter, Gauge

from actors.inventory.results import OrderView, TicketView
from cluster.settings import Settings
from router.http_metrics import at_zero
from router.mail_message import MailedTicket, cancelled_message, tickets_message
from router.periodic import ShardRounds
from router.tickets.ticket_codes import TicketCodes
from shards.mail import MailDelivery, MailQueries

log = logging.getLogger(__name__)

RESULTS = ("sent", "failed", "dead", "skipped")
EMAILS = at_zero(Counter("ticketing_emails_total",
                         "E-mails to ticket holders, by result (failed: retried later; dead: given up; skipped: "
                         "a ticket with no holder address, nothing sent).", ["result"]), *RESULTS)
MAIL_LAG = Gauge("ticketing_mail_lag_seconds",
                 "Age of the oldest outbox row still owing an e-mail (0 when none), by shard.",
                 ["shard"], multiprocess_mode="livemax")
ERROR_CHARS_MAX = 500  # of an error's text kept in mail_deliveries
STARTTLS = {"auto": None, "require": True, "off": False}  # aiosmtplib's start_tls for each setting

OrderReader = Callable[[int, UUID], Awaitable[Any]]  # (shard, order id) -> the actor's reply


class Outcome(NamedTuple):
    status: str  # sent, pending (failed: retried), dead
    error: str | None = None
    next_attempt_at: datetime | None = None
    ends_round: bool = False  # the server or the connection failed, not this one message


class SmtpSender:
    """Sends one message per SMTP conversation through the configured server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        settings = self.settings
        async with asyncio.timeout(settings.smtp_timeout_s):
            await aiosmtplib.send(
                message, hostname=settings.smtp_host, port=settings.smtp_port,
                username=settings.smtp_username or None, password=settings.smtp_password or None,
                start_tls=STARTTLS[settings.smtp_starttls], validate_certs=settings.smtp_tls_verify,
                timeout=settings.smtp_timeout_s)


def refused_for_good(error: BaseException) -> bool:
    """The server refused this recipient or this message with a permanent (5xx) answer."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return bool(error.recipients) and all(refusal.code >= 500 for refusal in error.recipients)
    return isinstance(error, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError) and error.code >= 500


def ends_round(error: BaseException) -> bool:
    """The server or the connection failed (not one message's recipient or data): the shard's next
    e-mails would meet the same failure, so its round stops."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPRecipientRefused
                  | aiosmtplib.SMTPDataError):
        return False
    return isinstance(error, aiosmtplib.SMTPException | OSError | TimeoutError)


class MailRelay:
    def __init__(self, queries: MailQueries, read_order: OrderReader, codes: TicketCodes, settings: Settings,
                 sender: SmtpSender | None = None) -> None:
        self.queries = queries
        self.read_order = read_order
        self.codes = codes
        self.settings = settings
        self.sender = sender or SmtpSender(settings)
        self._rounds = ShardRounds("mail relay", settings.shard_count, settings.mail_relay_interval_s, self._round)
        for shard_id in range(settings.shard_count):
            MAIL_LAG.labels(str(shard_id)).set(0)

    def start(self) -> None:
        """Start the relay's rounds, if e-mail is on (``smtp_host`` set)."""
        if self.settings.smtp_host:
            self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def _round(self, shard_id: int) -> None:
        await self.relay_shard(shard_id)
        MAIL_LAG.labels(str(shard_id)).set(await self.queries.lag_s(shard_id))

    async def relay_shard(self, shard_id: int) -> None:
        """One round on one shard, if no other relay holds it (module docstring)."""
        async with self.queries.holding(shard_id, self.settings.db_call_timeout_s) as connection:
            if connection is None:
                return
            rows_max = self.settings.mail_relay_batch_rows_max
            planned = await self.queries.plan_next(connection, rows_max)
            skipped = sum(len(mail.ticket_ids) for mail in planned if mail.skipped)
            if skipped:
                EMAILS.labels("skipped").inc(skipped)
            for delivery in await self.queries.due(connection, rows_max):
                outcome = await self.attempt(shard_id, delivery)
                await self.queries.record(connection, delivery, outcome.status, outcome.error, outcome.next_attempt_at)
                if outcome.ends_round:
                    break

    async def attempt(self, shard_id: int, delivery: MailDelivery) -> Outcome:
        """Build and send one e-mail; its outcome, counted."""
        attempt = delivery.attempts + 1
        try:
            message = await self.message(shard_id, delivery)
        except ValueError as error:  # this row can never make a valid message: no retry
            return self._counted(shard_id, delivery, Outcome("dead", f"message not built: {error}"[:ERROR_CHARS_MAX]))
        except Exception as error:  # the actor did not answer, or not with the order: retried, and the
            # round ends, since the shard's next e-mails would wait on the same actor
            return self._failed(shard_id, delivery, attempt, f"tickets not read: {_text(error)}", ends_round=True)
        try:
            await self.sender.send(message)
        except Exception as error:
            if refused_for_good(error):
                return self._counted(shard_id, delivery, Outcome("dead", _text(error)))
            # Anything unforeseen is charged as an attempt too, so no row can stall the shard's e-mail.
            return self._failed(shard_id, delivery, attempt, _text(error), ends_round=ends_round(error))
        return self._counted(shard_id, delivery, Outcome("sent"))

    async def message(self, shard_id: int, delivery: MailDelivery) -> EmailMessage:
        sender = self.settings.smtp_from
        if delivery.topic == "ticket.cancelled":
            return cancelled_message(sender, delivery, shard_id)
        if delivery.order_id is None:
            raise ValueError("an order.confirmed delivery without its order")
        order = await self.read_order(shard_id, delivery.order_id)
        if not isinstance(order, OrderView):
            raise LookupError(f"order {delivery.order_id} read back as {type(order).__name__}")
        views = {view.ticket_id: view for view in order.tickets}
        missing = [ticket_id for ticket_id in delivery.ticket_ids if ticket_id not in views]
        if missing:
            raise LookupError(f"order {delivery.order_id} lacks tickets {missing}")
        tickets = [await self._mailed(views[ticket_id]) for ticket_id in delivery.ticket_ids]
        return tickets_message(sender, delivery, shard_id, tickets)

    async def _mailed(self, view: TicketView) -> MailedTicket:
        code = self.codes.code(view)
        place = f"seat {view.seat}" if view.seat is not None else f"section {view.section_id}"
        return MailedTicket(str(view.ticket_id), place, code, await self.codes.image(code, "png"))

    def _failed(self, shard_id: int, delivery: MailDelivery, attempt: int, error: str, *, ends_round: bool) -> Outcome:
        if attempt >= self.settings.mail_attempts_max:
            return self._counted(shard_id, delivery, Outcome("dead", error, None, ends_round))
        next_attempt_at = datetime.now(UTC) + timedelta(seconds=self.backoff_s(attempt))
        return self._counted(shard_id, delivery, Outcome("pending", error, next_attempt_at, ends_round))

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based): exponential, capped."""
        return min(self.settings.mail_retry_base_s * 2 ** (attempt - 1), self.settings.mail_retry_max_s)

    @staticmethod
    def _counted(shard_id: int, delivery: MailDelivery, outcome: Outcome) -> Outcome:
        EMAILS.labels("failed" if outcome.status == "pending" else outcome.status).inc()
        if outcome.status == "dead":
            # The outbox row and shard name the e-mail; the address stays out of the log.
            log.warning("mail relay: e-mail for outbox row %s of shard %s is dead (%s)", delivery.outbox_id,
                        shard_id, outcome.error)
        return outcome


def _text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:ERROR_CHARS_MAX]
