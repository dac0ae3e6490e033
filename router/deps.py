"""Per-request helpers shared by the route modules: settings, the shard client, bodies, keys."""

from __future__ import annotations

import re
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from actors.protocol import Caller
from cluster.settings import Settings
from router.edge import Incoming
from router.problems import ApiError
from router.shard_client import Overloaded, ShardClient, ShardUnavailable
from router.views import unavailable_error
from shards.slots import slot_of_id

# A protocol constant: API.md fixes the Idempotency-Key at 1-255 characters, and the keys' column
# checks the same length (shards/sql/002_inventory.sql), so it is not a setting.
IDEMPOTENCY_KEY_CHARS_MAX = 255
# Printable ASCII; no space first or last, which HTTP would strip before we see the key.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[!-~]([ -~]*[!-~])?$")
Model = TypeVar("Model", bound=BaseModel)


def settings_of(request: Incoming) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_of(request: Incoming) -> ShardClient:
    client: ShardClient = request.app.state.shard_client
    return client


async def parse_body(request: Incoming, model: type[Model]) -> Model:
    """Validate the raw JSON body (pydantic's JSON parser: strict, fast, no intermediate dict)."""
    content_type = request.headers.get("content-type", "")
    if content_type and not content_type.startswith("application/json"):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json")
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as error:
        errors = [{"loc": [str(part) for part in item["loc"]], "msg": item["msg"], "type": item["type"]}
                  for item in error.errors(include_url=False, include_input=False)]
        detail = "; ".join(f"{'.'.join(item['loc']) or 'body'}: {item['msg']}" for item in errors[:5])
        raise ApiError(422, "VALIDATION_ERROR", detail, errors=errors) from None


def idempotency_key(request: Incoming) -> str | None:
    """The request's key, stored as sent: 1-255 printable ASCII characters.

    ASCII only, because header bytes above 0x7F reach us decoded as Latin-1 whatever the client
    meant (a UTF-8 key would be stored as mojibake), and C1 controls or no-break spaces are not a
    key anyone types on purpose. Nothing else can then break storage: no NUL, no surrogate, and
    one character is one byte in the 255-character column.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_CHARS_MAX or not IDEMPOTENCY_KEY_PATTERN.match(key):
        raise ApiError(422, "VALIDATION_ERROR",
                       f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_CHARS_MAX} printable ASCII characters",
                       errors=[{"loc": ["header", "Idempotency-Key"], "msg": "invalid key", "type": "value_error"}])
    return key


async def shard_for_direct_read(request: Incoming, event_id: UUID) -> int:
    """The event's shard for a read made straight in Postgres (reports, exports, audit,
    revocations): no actor stands in the way to answer "slot moved", so the shard map is read
    again first — at most once per `slot_moved_retry_s` per process, and these reads are rare — and
    a slot move is seen at once instead of within `shard_map_refresh_s`."""
    client = client_of(request)
    await client.read_map()
    return client.shard_map.shard_of(event_id)


def shard_of_entity(client: ShardClient, entity_id: UUID, code: str) -> int:
    """The shard of a hold/order/ticket id (its slot is inside it); 404 for ids that are not ours."""
    slot = slot_of_id(entity_id)
    if slot is None:
        raise ApiError(404, code, "not found")
    return client.shard_map.shard_of_slot[slot]


async def call_shard(request: Incoming, shard_id: int, message: Any, *, read: bool = False,
                     retryable: bool = False) -> Any:
    """Send one message through the shard client, turning transport failures into 503 problems."""
    client = client_of(request)
    retry_after_s = settings_of(request).retry_after_s
    try:
        if read:
            return await client.read(shard_id, message)
        return await client.apply(shard_id, message, retryable=retryable)
    except Overloaded as error:
        raise unavailable_error(f"shard {shard_id} overloaded: {error}", retry_after_s) from None
    except ShardUnavailable as error:
        raise unavailable_error(f"shard {shard_id}: {error}", retry_after_s) from None


def caller_of(request: Incoming, principal: Any) -> Caller:
    """Who makes this request, for the audit log: the principal (`router.auth.authorize`) and the
    request id the edge gave it (and sends back as X-Request-Id)."""
    return Caller(principal.user_id, principal.role, request.scope.get("request_id"))
