"""Writes the tiny fixture files checked in beside this script (run once; kept for provenance).

good.jpg / good.png: small real images; truncated.jpg: good.jpg cut in half; empty.jpg:
zero bytes; text.jpg: a text file with an image extension; bomb.png: a valid PNG header
claiming 100000 x 100000 pixels (a decompression bomb) with almost no data.
"""

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

here = Path(__file__).parent
rng = np.random.default_rng(0)
y, x = np.mgrid[0:48, 0:64]
rgb = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
Image.fromarray(rgb).save(here / "good.jpg", quality=90)
Image.fromarray(rgb[:, :, 1]).save(here / "good.png")
data = (here / "good.jpg").read_bytes()
(here / "truncated.jpg").write_bytes(data[: len(data) // 2])
(here / "empty.jpg").write_bytes(b"")
(here / "text.jpg").write_text("this is not an image\n")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
idat = zlib.compress(b"\x00" * 1000)
(here / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                                + chunk(b"IEND", b""))

png = (here / "good.png").read_bytes()
idat_at = png.index(b"IDAT")
corrupt = bytearray(png)
corrupt[idat_at + 6] ^= 0xFF  # damage the compressed data; the CRC no longer matches
(here / "corrupt.png").write_bytes(bytes(corrupt))
Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(here / "gray16.png")
Image.fromarray(rgb).convert("CMYK").save(here / "cmyk.jpg")
palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
palette.info["transparency"] = 0
palette.save(here / "palette.png", transparency=0)
Image.new("RGB", (1, 1), (10, 200, 30)).save(here / "one_pixel.png")
