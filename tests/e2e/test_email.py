"""E-mailed tickets over SMTP (issue 15, "E-mail"; router/mail_relay.py).

A real SMTP server (aiosmtpd) runs in this process on a free port, offering STARTTLS with a
certificate made here, and a cluster of this module's own is configured to send to it
(`TICKETING_SMTP_*`, STARTTLS required, the self-signed certificate not verified). Over HTTP a
buyer checks out with holders, and the test reads what the server received:

- each holder's address gets one e-mail carrying its tickets: every QR PNG decodes (zxing-cpp, an
  independent decoder) to exactly the code `GET /v1/tickets/{id}` answers, the text carries the
  code, and the conversation was upgraded by STARTTLS; a ticket whose checkout named no holder is
  counted skipped and mailed to nobody;
- negative control of `smtp_starttls=require`: while the server stops offering STARTTLS nothing is
  sent and the attempt is counted failed; once it offers it again, the e-mail goes out;
- a server answering 451 to the first attempt gets the e-mail again later, and keeps one copy;
- an event's cancellation (its tickets' `ticket.cancelled` outbox rows) sends each holder a notice;
- a holder name with CR/LF cannot add a header: the name is folded onto one line and the holder
  gets the e-mail, to their own address only (an address with CR/LF is dead-lettered: unit tests).
- outbox rows read again from the start (the relay's cursor set back) send nothing already sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import io
import ipaddress
import os
import re
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from cluster.runstate import free_port
from tests.harness import RunningCluster, running_cluster
from tests.support import create_event, event_body, fetch, ga, hold, shard_dsn

zxingcpp = pytest.importorskip("zxingcpp")

pytestmark = pytest.mark.e2e

MAIL_TIMEOUT_S = 60.0
SENDER = "tickets@ticketing.test"


@dataclass(frozen=True)
class Received:
    recipients: tuple[str, ...]
    message: EmailMessage
    starttls: bool


class Mailbox:
    """The SMTP server's handler: keeps every accepted message; answers 451 to the first DATA for
    an address in `refuse_first` (and remembers that it did)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.refuse_first: set[str] = set()
        self.refused: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # aiosmtpd's name
        recipients = tuple(envelope.rcpt_tos)
        with self.lock:
            refuse = [address for address in recipients if address in self.refuse_first]
            if refuse:
                self.refuse_first.difference_update(refuse)
                self.refused.extend(refuse)
                return "451 4.3.0 Try again later"
            content = envelope.original_content or b""
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.received.append(Received(recipients, message, session.ssl is not None))
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [entry for entry in self.received if address in entry.recipients]


class SwitchableStarttls(Controller):
    """aiosmtpd's threaded server, whose offer of STARTTLS the test can withdraw (new connections)."""

    offer_starttls = True

    def factory(self) -> SMTP:
        parameters = dict(self.SMTP_kwargs)
        if not self.offer_starttls:
            parameters.pop("tls_context", None)
        return SMTP(self.handler, **parameters)


def self_signed_context(folder: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 made now (nobody can verify it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.fixture(scope="module")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchableStarttls]:
    folder = Path(tmp_path_factory.mktemp("smtp"))
    controller = SwitchableStarttls(Mailbox(), hostname="127.0.0.1", port=free_port(),
                                    tls_context=self_signed_context(folder))
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def mailbox(smtp_server: SwitchableStarttls) -> Mailbox:
    handler: Mailbox = smtp_server.handler
    return handler


@pytest.fixture(scope="module")
def mail_cluster(smtp_server: SwitchableStarttls, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[RunningCluster]:
    if os.environ.get("TICKETING_PG_DSNS"):
        pytest.skip("starts a cluster of its own (SMTP settings): external databases are shared with the "
                    "session's cluster, whose shard leases a second deployment would take")
    with running_cluster(Path(tmp_path_factory.mktemp("mail-cluster")) / "data", environment={
        "TICKETING_SMTP_HOST": "127.0.0.1", "TICKETING_SMTP_PORT": str(smtp_server.port),
        "TICKETING_SMTP_FROM": f"Ticketing <{SENDER}>", "TICKETING_SMTP_STARTTLS": "require",
        "TICKETING_SMTP_TLS_VERIFY": "false", "TICKETING_SMTP_TIMEOUT_S": "5",
        # Retries within seconds: the first after 1 s, then 2 s; dead only after 6 attempts (~9 s).
        "TICKETING_MAIL_RELAY_INTERVAL_S": "0.2", "TICKETING_MAIL_RETRY_BASE_S": "1",
        "TICKETING_MAIL_RETRY_MAX_S": "2", "TICKETING_MAIL_ATTEMPTS_MAX": "6",
    }) as running:
        yield running


@pytest.fixture(scope="module")
def mail_http(mail_cluster: RunningCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mail_cluster.base_url, timeout=30) as client:
        yield client


def address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.test"


def buy(http: httpx.Client, cluster: RunningCluster, buyer: str, quantity: int,
        holders: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
    """A new event's tickets, checked out with `holders`: (event id, the checkout's answer)."""
    event_id = create_event(http, cluster, event_body(ga("floor", 20), title="Mail night",
                                                      per_person_limit=None), "mail-organizer")["id"]
    created = hold(http, cluster, buyer, {"event_id": event_id, "section": "floor", "quantity": quantity})
    assert created.status_code == 201, created.text
    paid = http.post(f"/v1/holds/{created.json()['id']}/checkout",
                     json={"payment": {"token": "tok_visa"}, "holders": holders},
                     headers={**cluster.headers(buyer), "Idempotency-Key": f"pay-{uuid.uuid4()}"}, timeout=60)
    assert paid.status_code == 201, paid.text
    return event_id, dict(paid.json())


def wait_for(mailbox: Mailbox, recipient: str, count: int = 1) -> list[Received]:
    deadline = time.monotonic() + MAIL_TIMEOUT_S
    while time.monotonic() < deadline:
        received = mailbox.to(recipient)
        if len(received) >= count:
            return received
        time.sleep(0.1)
    raise AssertionError(f"no e-mail to {recipient} within {MAIL_TIMEOUT_S} s")


def deliveries(cluster: RunningCluster, event_id: str) -> list[Any]:
    return asyncio.run(fetch(shard_dsn(cluster, event_id),
                             """SELECT recipient, status, attempts, error, ticket_ids FROM mail_deliveries
                                WHERE event_id = $1 ORDER BY outbox_id, recipient""", uuid.UUID(event_id)))


def wait_for_row(cluster: RunningCluster, event_id: str, recipient: str, done: Any) -> Any:
    deadline = time.monotonic() + MAIL_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = [row for row in deliveries(cluster, event_id) if row["recipient"] == recipient]
        if rows and done(rows[0]):
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"the delivery to {recipient!r} did not get there: {deliveries(cluster, event_id)}")


def emails_total(http: httpx.Client, result: str) -> float:
    text = http.get("/metrics").text
    found = re.search(r'^ticketing_emails_total\{result="' + result + r'"\} (\S+)$', text, re.MULTILINE)
    assert found, f"no ticketing_emails_total{{result={result!r}}} series"
    return float(found.group(1))


def decoded_qr(png: bytes) -> str:
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 1, results
    return str(results[0].text)


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_each_holder_gets_their_tickets_as_qr_codes_over_starttls(
        mail_http: httpx.Client, mail_cluster: RunningCluster, mailbox: Mailbox) -> None:
    ann, bob = address("ann"), address("bob")
    skipped_before = emails_total(mail_http, "skipped")
    event_id, order = buy(mail_http, mail_cluster, "mail-buyer-1", 3,
                          [{"name": "Ann Example", "email": ann}, {"name": "Bob Example", "email": bob}])
    tickets = order["tickets"]
    for holder, ticket in zip((ann, bob), tickets[:2], strict=True):
        (received,) = wait_for(mailbox, holder)
        assert received.starttls, "the conversation was not upgraded by STARTTLS"
        assert received.recipients == (holder,)
        message = received.message
        assert holder in str(message["To"]) and SENDER in str(message["From"])
        assert "Mail night" in str(message["Subject"])
        code = mail_http.get(f"/v1/tickets/{ticket['id']}", headers=mail_cluster.headers("mail-buyer-1")).json()["code"]
        assert code == ticket["code"]
        attachments = list(message.iter_attachments())
        assert [part.get_content_type() for part in attachments] == ["image/png"]
        assert decoded_qr(attachments[0].get_content()) == code
        assert code in text_of(message) and ticket["id"] in text_of(message)
    # The third ticket had no holder: nobody is mailed for it, and it is counted skipped.
    skipped = wait_for_row(mail_cluster, event_id, "", lambda row: row["status"] == "skipped")
    assert [str(ticket_id) for ticket_id in skipped["ticket_ids"]] == [tickets[2]["id"]]
    assert emails_total(mail_http, "skipped") >= skipped_before + 1
    time.sleep(1.0)  # rounds go on: still one e-mail per address
    assert len(mailbox.to(ann)) == 1 and len(mailbox.to(bob)) == 1
    assert {row["status"] for row in deliveries(mail_cluster, event_id)} == {"sent", "skipped"}


def test_required_starttls_sends_nothing_to_a_server_that_does_not_offer_it(
        mail_http: httpx.Client, mail_cluster: RunningCluster, mailbox: Mailbox,
        smtp_server: SwitchableStarttls) -> None:
    """Negative control of `smtp_starttls=require`: without STARTTLS the e-mail is not sent in clear."""
    cy = address("cy")
    failed_before = emails_total(mail_http, "failed")
    smtp_server.offer_starttls = False
    try:
        event_id, _ = buy(mail_http, mail_cluster, "mail-buyer-2", 1, [{"name": "Cy", "email": cy}])
        row = wait_for_row(mail_cluster, event_id, cy, lambda row: row["attempts"] >= 1)
        assert row["status"] == "pending" and "STARTTLS" in row["error"], row
        assert mailbox.to(cy) == []
        assert emails_total(mail_http, "failed") >= failed_before + 1
    finally:
        smtp_server.offer_starttls = True
    (received,) = wait_for(mailbox, cy)  # retried once the server offers STARTTLS again
    assert received.starttls


def test_a_refused_e_mail_is_retried_and_delivered_once(mail_http: httpx.Client, mail_cluster: RunningCluster,
                                                        mailbox: Mailbox) -> None:
    dee = address("dee")
    mailbox.refuse_first.add(dee)
    event_id, _ = buy(mail_http, mail_cluster, "mail-buyer-3", 1, [{"name": "Dee", "email": dee}])
    wait_for(mailbox, dee)
    row = wait_for_row(mail_cluster, event_id, dee, lambda row: row["status"] == "sent")
    assert mailbox.refused.count(dee) == 1
    assert row["attempts"] == 2, row
    time.sleep(1.0)
    assert len(mailbox.to(dee)) == 1


def test_a_cancelled_ticket_sends_its_holder_a_notice(mail_http: httpx.Client, mail_cluster: RunningCluster,
                                                      mailbox: Mailbox) -> None:
    eli = address("eli")
    event_id, order = buy(mail_http, mail_cluster, "mail-buyer-4", 1, [{"name": "Eli", "email": eli}])
    wait_for(mailbox, eli)
    ticket_id = order["tickets"][0]["id"]
    cancelled = mail_http.patch(f"/v1/events/{event_id}", json={"status": "cancelled"},
                                headers=mail_cluster.headers("mail-organizer", "organizer"))
    assert cancelled.status_code == 200, cancelled.text
    notices = wait_for(mailbox, eli, 2)  # once the cancellation (router/cancellation.py) refunds the order
    notice = notices[1].message
    assert str(notice["Subject"]).startswith("Cancelled:")
    assert ticket_id in text_of(notice) and "refunded" in text_of(notice)
    assert list(notice.iter_attachments()) == [] and notices[1].starttls


def test_a_holder_name_with_a_line_break_is_folded_and_adds_no_header(
        mail_http: httpx.Client, mail_cluster: RunningCluster, mailbox: Mailbox) -> None:
    eve, fay, spy = address("eve"), address("fay"), address("spy")
    buy(mail_http, mail_cluster, "mail-buyer-5", 2,
        [{"name": f"Eve\r\nBcc: {spy}", "email": eve}, {"name": "Fay", "email": fay}])
    wait_for(mailbox, fay)
    (received,) = wait_for(mailbox, eve)  # the name is folded onto one line: Eve gets her ticket
    assert received.message.get_all("Bcc") is None
    (to,) = received.message["To"].addresses
    assert to.addr_spec == eve and to.display_name == f"Eve Bcc: {spy}"
    assert mailbox.to(spy) == []


def test_outbox_rows_planned_again_send_nothing_already_sent(mail_http: httpx.Client, mail_cluster: RunningCluster,
                                                             mailbox: Mailbox) -> None:
    """A relay that reads the outbox again from its start (its cursor lost, or set back by hand) plans
    every row again, and sends nothing recorded sent: at least once, never twice once recorded."""
    gus = address("gus")
    event_id, _ = buy(mail_http, mail_cluster, "mail-buyer-6", 1, [{"name": "Gus", "email": gus}])
    wait_for(mailbox, gus)
    wait_for_row(mail_cluster, event_id, gus, lambda row: row["status"] == "sent")
    dsn = shard_dsn(mail_cluster, event_id)
    (before,) = asyncio.run(fetch(dsn, "SELECT outbox_id FROM mail_cursor"))
    asyncio.run(fetch(dsn, "UPDATE mail_cursor SET outbox_id = 0"))
    deadline = time.monotonic() + MAIL_TIMEOUT_S
    while asyncio.run(fetch(dsn, "SELECT outbox_id FROM mail_cursor"))[0]["outbox_id"] < before["outbox_id"]:
        assert time.monotonic() < deadline, "the relay did not read the outbox again"
        time.sleep(0.1)
    time.sleep(1.0)  # rounds go on: still one e-mail per address
    assert len(mailbox.to(gus)) == 1
    assert [row["status"] for row in deliveries(mail_cluster, event_id)] == ["sent"]
