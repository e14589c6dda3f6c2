"""The soak report's chart (``docs/soak-latency.png``): a tiny PNG plotter, as the project has no matplotlib.

``write_png(path, report)`` draws the latency percentiles per window and the broker's RSS of a
report that ``bench/soak.py`` wrote (``--replot`` redraws one written earlier).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

FONT = {  # 3x5 glyphs, rows top to bottom
    "0": ["111", "101", "101", "101", "111"], "1": ["010", "110", "010", "010", "111"],
    "2": ["111", "001", "111", "100", "111"], "3": ["111", "001", "111", "001", "111"],
    "4": ["101", "101", "111", "001", "001"], "5": ["111", "100", "111", "001", "111"],
    "6": ["111", "100", "111", "101", "111"], "7": ["111", "001", "010", "010", "010"],
    "8": ["111", "101", "111", "101", "111"], "9": ["111", "101", "111", "001", "111"],
    ".": ["000", "000", "000", "000", "010"], " ": ["000"] * 5, "-": ["000", "000", "111", "000", "000"],
    "m": ["000", "110", "111", "101", "101"], "s": ["011", "100", "010", "001", "110"],
    "p": ["110", "101", "110", "100", "100"], "M": ["101", "111", "111", "101", "101"],
    "B": ["110", "101", "110", "101", "110"], "i": ["010", "000", "010", "010", "010"],
    "R": ["110", "101", "110", "101", "101"], "S": ["011", "100", "010", "001", "110"],
    "t": ["010", "111", "010", "010", "011"], "a": ["000", "011", "101", "101", "011"],
    "e": ["010", "101", "111", "100", "011"], "n": ["000", "110", "101", "101", "101"],
    "c": ["000", "011", "100", "100", "011"], "y": ["101", "101", "011", "001", "110"],
    "l": ["110", "010", "010", "010", "111"], "o": ["000", "010", "101", "101", "010"],
    "d": ["001", "011", "101", "101", "011"], "r": ["000", "101", "110", "100", "100"],
    "(": ["010", "100", "100", "100", "010"], ")": ["010", "001", "001", "001", "010"],
    "/": ["001", "001", "010", "100", "100"], ",": ["000", "000", "000", "010", "100"],
    "k": ["100", "101", "110", "110", "101"], "u": ["000", "101", "101", "101", "011"],
    "b": ["100", "110", "101", "101", "110"], "g": ["011", "101", "011", "001", "110"],
    "w": ["000", "101", "101", "111", "101"], "f": ["011", "100", "110", "100", "100"],
    "h": ["100", "110", "101", "101", "101"], "v": ["000", "101", "101", "101", "010"],
    ";": ["000", "010", "000", "010", "100"], ":": ["000", "010", "000", "010", "000"],
}


class Canvas:
    """An RGB raster with lines and 3x5 text, saved as PNG with zlib."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: tuple[int, int, int], size: int = 1) -> None:
        for dx in range(size):
            for dy in range(size):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    offset = (py * self.width + px) * 3
                    self.pixels[offset:offset + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int], size: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for step in range(steps + 1):
            self.dot(round(x0 + (x1 - x0) * step / steps), round(y0 + (y1 - y0) * step / steps), color, size)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = (0, 0, 0), scale: int = 2) -> None:
        for index, char in enumerate(text):
            glyph = FONT.get(char, FONT[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        self.dot(x + (index * 4 + col) * scale, y + row * scale, color, scale)

    def save(self, path: Path) -> None:
        raw = b"".join(b"\x00" + bytes(self.pixels[y * self.width * 3:(y + 1) * self.width * 3])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack("!IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                         + chunk(b"IEND", b""))


def tick_label(value: float) -> str:
    """A short axis label the 3x5 font can draw (no exponents)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def write_png(path: Path, report: dict[str, Any]) -> None:
    """p50 (blue) and p99 (red) latency per window, broker RSS (green, right scale)."""
    canvas = Canvas(900, 420)
    left, right, top, bottom = 70, 830, 40, 360
    windows = [w for w in report["windows"] if w["delivered"]]
    peak = max([w["p99_ms"] for w in windows] + [1.0])
    peak = float(f"{peak * 1.15:.2g}")
    span = max(report["seconds"], 1)
    canvas.text(left, 10, f"soak latency ms (p50 blue, p99 red), broker RSS MiB (green); "
                          f"{report['bridges']} bridges, {report['simulated_peers']} sims", scale=2)
    canvas.line(left, bottom, right, bottom, (0, 0, 0))
    canvas.line(left, top, left, bottom, (0, 0, 0))
    canvas.line(right, top, right, bottom, (0, 0, 0))
    for tick in range(6):
        y = bottom - (bottom - top) * tick // 5
        canvas.line(left - 5, y, left, y, (0, 0, 0))
        canvas.text(8, y - 5, tick_label(peak * tick / 5), scale=2)
        x = left + (right - left) * tick // 5
        canvas.line(x, bottom, x, bottom + 5, (0, 0, 0))
        canvas.text(x - 10, bottom + 12, f"{span * tick / 5:.0f}s", scale=2)

    def plot(points: list[tuple[float, float]], top_value: float, color: tuple[int, int, int]) -> None:
        pixels = [(left + int((right - left) * t / span), bottom - int((bottom - top) * min(v, top_value) / top_value))
                  for t, v in points]
        for (x0, y0), (x1, y1) in zip(pixels, pixels[1:]):
            canvas.line(x0, y0, x1, y1, color, 2)
        for x, y in pixels:
            canvas.dot(x - 2, y - 2, color, 5)

    mids = [((w["from_s"] + w["to_s"]) / 2, w) for w in windows]
    plot([(t, w["p50_ms"]) for t, w in mids], peak, (30, 80, 220))
    plot([(t, w["p99_ms"]) for t, w in mids], peak, (220, 40, 40))
    rss = [(max(0.0, s["t_s"]), s["rss_mib"]) for s in report["broker_samples"]]
    rss_top = float(f"{max(r for _, r in rss) * 1.3:.2g}")
    plot([(min(t, span), r) for t, r in rss], rss_top, (30, 150, 60))
    for tick in range(6):
        y = bottom - (bottom - top) * tick // 5
        canvas.text(right + 8, y - 5, tick_label(rss_top * tick / 5), (30, 150, 60), scale=2)
    s, e = report["broker_start"], report["broker_end"]
    canvas.text(left, 395, f"sent {report['sent']}, lost {report['lost']}, dup {report['duplicated']}; "
                           f"RSS {s['rss_mib']}-{e['rss_mib']} MiB, fds {s['fds']}-{e['fds']}", scale=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)

