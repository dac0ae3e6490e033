"""An event's API document ⇄ the core's layout and settings ⇄ its database rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from actors.inventory import (
    EventSettings,
    EventStatus,
    GeneralAdmissionSpec,
    Layout,
    RowSpec,
    SaleWindow,
    SeatedSectionSpec,
)
from actors.inventory.layout import DynamicPricing, SectionSpec

if TYPE_CHECKING:
    from actors.catalog import EventBody, SectionBody


def parse_time(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def layout_of(document: Mapping[str, Any]) -> Layout:
    specs: list[SectionSpec] = []
    for section in document["sections"]:
        pricing = pricing_of(section.get("pricing"))
        if section["kind"] == "ga":
            specs.append(GeneralAdmissionSpec(section["id"], section["price_cents"], section["capacity"], pricing))
        else:
            rows = tuple(RowSpec(row["label"], row["seats"]) for row in section["rows"])
            specs.append(SeatedSectionSpec(section["id"], section["price_cents"], rows,
                                           tuple(section.get("blocked") or ()), pricing))
    return Layout(tuple(specs))


def pricing_of(pricing: Mapping[str, Any] | None) -> DynamicPricing | None:
    """A section's `pricing` body → the core's bounds; None for a fixed price (or none given)."""
    if not pricing or pricing.get("mode") != "dynamic":
        return None
    return DynamicPricing(pricing["floor_cents"], pricing["ceiling_cents"])


def with_current_prices(document: EventBody, sections: Iterable[Any]) -> EventBody:
    """The document with each dynamic section's price as it is now (`SectionAvailability`s of the
    event); the document itself unchanged when nothing moved, so fixed-price events copy nothing."""
    current = {section.section_id: section.price_cents for section in sections}
    if all(current.get(section["id"], section["price_cents"]) == section["price_cents"]
           for section in document["sections"]):
        return document
    updated = document.copy()
    updated["sections"] = [{**section, "price_cents": current.get(section["id"], section["price_cents"])}  # type: ignore[typeddict-item]
                           for section in document["sections"]]
    return updated


def normalized_sections(sections: list[Any]) -> list[Any]:
    """The sections as the document keeps them: `pricing` only for a dynamic section, so a document
    read back from rows (`document_from_rows`) is the one that was created."""
    normalized = []
    for section in sections:
        kept = {name: value for name, value in section.items() if name != "pricing"}
        if pricing_of(section.get("pricing")) is not None:
            kept["pricing"] = section["pricing"]
        normalized.append(kept)
    return normalized


def windows_of(windows: list[dict[str, Any]] | None) -> tuple[SaleWindow, ...]:
    return tuple(
        SaleWindow(window.get("name") or "", parse_time(window["starts_at"]) or 0.0,
                   parse_time(window.get("ends_at")), window.get("code"))
        for window in windows or ()
    )


def settings_of(document: Mapping[str, Any]) -> EventSettings:
    return EventSettings(
        currency=document["currency"],
        hold_seconds=document["hold_seconds"],
        per_person_limit=document.get("per_person_limit"),
        sale_windows=windows_of(document.get("sale_windows")),
        status=EventStatus(document.get("status", "on_sale")),
        queue_required=queue_required(document.get("queue")),
    )


def queue_required(queue: Mapping[str, Any] | None) -> bool:
    return bool(queue and queue.get("enabled"))


def event_row(event_id: UUID, slot: int, organizer_id: str, document: Mapping[str, Any], seat_count: int,
              created_at: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id, "slot": slot, "organizer_id": organizer_id, "title": document["title"],
        "category": document.get("category") or "", "description": document.get("description") or "",
        "venue": document.get("venue") or {}, "starts_at": _datetime(document["starts_at"]),
        "ends_at": _datetime(document.get("ends_at")), "currency": document["currency"],
        "hold_seconds": document["hold_seconds"], "per_person_limit": document.get("per_person_limit"),
        "queue": document.get("queue") or {}, "sale_windows": document.get("sale_windows") or [],
        "status": document.get("status", "on_sale"), "seat_count": seat_count, "created_at": created_at,
    }


def section_rows(event_id: UUID, document: Mapping[str, Any], layout: Layout) -> list[dict[str, Any]]:
    rows = []
    for position, (section, compiled) in enumerate(zip(document["sections"], layout.sections, strict=True)):
        blocked = [seat_no for seat_no in layout.blocked_seat_nos
                   if compiled.first_seat_no <= seat_no < compiled.end_seat_no]
        rows.append({
            "event_id": event_id, "section_id": section["id"], "position": position, "name": section["name"],
            "kind": section["kind"], "capacity": compiled.capacity, "price_cents": section["price_cents"],
            "first_seat_no": compiled.first_seat_no if compiled.seated else None,
            "rows": section.get("rows") or [], "blocked_seat_nos": blocked,
            "pricing_mode": "fixed" if compiled.pricing is None else "dynamic",
            "floor_cents": None if compiled.pricing is None else compiled.pricing.floor_cents,
            "ceiling_cents": None if compiled.pricing is None else compiled.pricing.ceiling_cents,
        })
    return rows


def document_from_rows(event: dict[str, Any], sections: list[dict[str, Any]], layout: Layout | None
                       ) -> EventBody:
    """Rebuild the API document from database rows (recovery)."""
    document: EventBody = {
        "id": str(event["event_id"]), "title": event["title"], "category": event["category"],
        "description": event["description"], "venue": event["venue"], "starts_at": _iso(event["starts_at"]) or "",
        "ends_at": _iso(event["ends_at"]), "currency": event["currency"].strip(),
        "hold_seconds": event["hold_seconds"], "per_person_limit": event["per_person_limit"],
        "queue": event["queue"], "sale_windows": event["sale_windows"], "status": event["status"],
        "organizer_id": event["organizer_id"], "created_at": _iso(event["created_at"]) or "", "sections": [],
    }
    for row in sections:
        section: SectionBody = {"id": row["section_id"], "name": row["name"], "kind": row["kind"],
                                   "capacity": row["capacity"], "price_cents": row["price_cents"]}
        if row.get("pricing_mode") == "dynamic":
            section["pricing"] = {"mode": "dynamic", "floor_cents": row["floor_cents"],
                                  "ceiling_cents": row["ceiling_cents"]}
        if row["kind"] == "seated":
            section["rows"] = row["rows"]
            blocked = row["blocked_seat_nos"]
            section["blocked"] = [layout.seat_label(seat_no) for seat_no in blocked] if layout and blocked else []
        document["sections"].append(section)
    return document


def _datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
