"""QR images: a real signed code survives rendering and decoding by an independent decoder.

The decoder is zxing-cpp, a different implementation from the `qrcode` encoder, so the test
catches encoder-side mistakes (wrong mode, missing quiet zone) that a round trip through one
library would not. The SVG is rasterised here from its path (the path is a list of unit squares)
rather than with cairosvg, to avoid a system graphics dependency.
"""

from __future__ import annotations

import io
import re
import uuid
import xml.etree.ElementTree as ElementTree

import pytest
from PIL import Image, ImageDraw

from router.tickets import PLACE_BYTES_MAX, KeyRing, TicketClaims
from router.tickets.qr import QR_BORDER_MODULES, QR_BOX_SIZE_PX, QR_CODE_CHARS_MAX, qr_png, qr_svg

zxingcpp = pytest.importorskip("zxingcpp")

pytestmark = pytest.mark.unit

SVG_NAMESPACE = "{http://www.w3.org/2000/svg}"
# The path is one "Mx,yHx2Vy2Hxz" unit square per dark module.
SQUARE = re.compile(r"M(\d+),(\d+)H(\d+)V(\d+)H\1z")


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.load_or_create(tmp_path_factory.mktemp("data"))


def _code(ring: KeyRing, place: str = "A-12-7") -> str:
    return ring.sign(TicketClaims(uuid.uuid4(), uuid.uuid4(), place, "seat", 1_767_225_600))


def _decode(image: Image.Image) -> str:
    # QR codes only: with every format on, about 3 in 1,000 codes also "contain" a Codabar or ITF
    # barcode that the decoder reads out of the modules (measured over 4,000 codes).
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 1
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode
    assert results[0].ec_level == "M"
    return str(results[0].text)


@pytest.mark.parametrize("place", ["A-12-7", "x" * PLACE_BYTES_MAX])
def test_png_decodes_to_the_code_which_verifies_offline(ring: KeyRing, place: str) -> None:
    """The acceptance test: PNG → independent decoder → the same text → valid with the public keys."""
    code = _code(ring, place)
    image = Image.open(io.BytesIO(qr_png(code)))
    decoded = _decode(image)
    assert decoded == code
    gate = KeyRing.from_public_keys(ring.public_keys())
    assert gate.verify(decoded) == ring.verify(code)


def test_png_has_a_white_quiet_zone_and_whole_modules(ring: KeyRing) -> None:
    image = Image.open(io.BytesIO(qr_png(_code(ring)))).convert("L")
    width, height = image.size
    assert width == height and width % QR_BOX_SIZE_PX == 0
    assert width // QR_BOX_SIZE_PX - 2 * QR_BORDER_MODULES == 53  # version 9, as the docs quote
    quiet_px = QR_BORDER_MODULES * QR_BOX_SIZE_PX
    strips = [(0, 0, width, quiet_px), (0, height - quiet_px, width, height),
              (0, 0, quiet_px, height), (width - quiet_px, 0, width, height)]
    for strip in strips:
        assert image.crop(strip).getextrema() == (255, 255)
    # The top-left finder pattern starts right inside the quiet zone.
    assert image.getpixel((quiet_px, quiet_px)) == 0


def test_rendering_is_deterministic(ring: KeyRing) -> None:
    code = _code(ring)
    assert qr_png(code) == qr_png(code)
    assert qr_svg(code) == qr_svg(code)


def _rasterise(svg: bytes, scale_px: int) -> tuple[Image.Image, int]:
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG_NAMESPACE}svg"
    viewbox = root.attrib["viewBox"].split()
    assert viewbox[:2] == ["0", "0"] and viewbox[2] == viewbox[3]
    size = int(viewbox[2])
    background = root.find(f"{SVG_NAMESPACE}rect")
    assert background is not None and background.attrib["fill"] == "white"
    assert background.attrib["width"] == background.attrib["height"] == "100%"
    path = root.find(f"{SVG_NAMESPACE}path")
    assert path is not None
    squares = SQUARE.findall(path.attrib["d"])
    assert SQUARE.sub("", path.attrib["d"]) == ""  # nothing in the path but unit squares
    image = Image.new("L", (size * scale_px, size * scale_px), 255)
    draw = ImageDraw.Draw(image)
    for x, y, x_end, y_end in squares:
        assert int(x_end) == int(x) + 1 and int(y_end) == int(y) + 1
        draw.rectangle((int(x) * scale_px, int(y) * scale_px, (int(x) + 1) * scale_px - 1,
                        (int(y) + 1) * scale_px - 1), fill=0)
    return image, size


def test_svg_is_well_formed_with_quiet_zone_and_decodes(ring: KeyRing) -> None:
    code = _code(ring)
    svg = qr_svg(code)
    image, size = _rasterise(svg, scale_px=8)
    assert size == 53 + 2 * QR_BORDER_MODULES
    path = ElementTree.fromstring(svg).find(f"{SVG_NAMESPACE}path")
    assert path is not None
    coordinates = [int(value) for square in SQUARE.findall(path.attrib["d"]) for value in square[:2]]
    assert min(coordinates) == QR_BORDER_MODULES
    assert max(coordinates) == size - QR_BORDER_MODULES - 1
    assert _decode(image) == code


@pytest.mark.parametrize("code", ["", "x" * (QR_CODE_CHARS_MAX + 1)])
def test_empty_or_oversized_codes_are_refused(code: str) -> None:
    with pytest.raises(ValueError):
        qr_png(code)
    with pytest.raises(ValueError):
        qr_svg(code)

