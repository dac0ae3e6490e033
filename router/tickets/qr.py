"""QR images of ticket codes (``GET /v1/tickets/{id}/qr.png`` and ``qr.svg``).

Level M error correction survives a scuffed or glared phone screen (15 % of codewords) while
keeping a typical 159-character code at QR version 9 (53 modules; the longest place label gives
version 11). Level H would push it to version 13+ with denser modules, which cheap gate cameras
read worse than the damage it guards against. The 4-module quiet zone is the minimum the standard
asks for; scanners fail without it. Output is deterministic: the same code always renders to the
same bytes, so responses can be cached and compared.
"""

from __future__ import annotations

import io

import qrcode
import qrcode.constants
import qrcode.image.base
import qrcode.image.svg
from qrcode.image.pil import PilImage

# 8 px per module makes a version 9 code 488 px square: comfortably above what a phone camera
# needs at arm's length, and small enough for an e-mail.
QR_BOX_SIZE_PX = 8
QR_BORDER_MODULES = 4
# qrcode draws SVG at box_size/10 mm per module; 10 makes one module one user unit (1 mm), so the
# viewBox reads in modules and the path has integer coordinates.
QR_SVG_BOX_SIZE = 10
# Ticket codes are ~160 characters; anything far longer is a bug, not a ticket.
QR_CODE_CHARS_MAX = 512
_ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M


def _matrix(code: str, image_factory: type[qrcode.image.base.BaseImage], box_size: int) -> qrcode.QRCode:
    if not code or len(code) > QR_CODE_CHARS_MAX:
        raise ValueError(f"a ticket code has 1..{QR_CODE_CHARS_MAX} characters, got {len(code)}")
    matrix = qrcode.QRCode(version=None, error_correction=_ERROR_CORRECTION, box_size=box_size,
                           border=QR_BORDER_MODULES, image_factory=image_factory)
    matrix.add_data(code)
    matrix.make(fit=True)
    return matrix


def qr_png(code: str) -> bytes:
    """A black-on-white PNG of ``code``."""
    image = _matrix(code, PilImage, QR_BOX_SIZE_PX).make_image()
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


def qr_svg(code: str) -> bytes:
    """An SVG of ``code``: one path over a white rectangle, so it scans on dark pages too.

    Its viewBox is in modules (code plus quiet zone), so it scales to any size without blur.
    """
    image = _matrix(code, qrcode.image.svg.SvgPathFillImage, QR_SVG_BOX_SIZE).make_image()
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()
