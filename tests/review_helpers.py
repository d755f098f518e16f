"""Shared by the review app's tests: a small workspace of distinct images, and a sync client
over the ASGI app (in process, no socket)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

import smartset

TOKEN = "test-token-0123456789abcdefghijkl"


def write_images(root: Path, counts: dict[str, int], *, seed: int = 0, size: int = 32) -> None:
    """Class folders of distinct little PNGs (noise over a per-class shade)."""
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.full((size, size, 3), 40 + 60 * c, dtype=np.int16)
            noise = rng.integers(-40, 40, size=(size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i:02d}.png")


def make_workspace(path: Path, counts: dict[str, int] | None = None, *, seed: int = 0):
    counts = counts or {"cat": 4, "dog": 3, "bird": 2}
    write_images(path.parent / f"{path.name}-src", counts, seed=seed)
    ws = smartset.init(path)
    ws.ingest(path.parent / f"{path.name}-src", engine="serial", show_progress=False)
    return ws


class Client:
    """A blocking client for the review app, through httpx's ASGI transport."""

    def __init__(self, app, *, base_url: str = "http://127.0.0.1"):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)

    def request(self, method: str, url: str, *, token: str | None = TOKEN, headers=None, **kw):
        headers = dict(headers or {})
        if token is not None:
            headers.setdefault("X-Smartset-Token", token)
        return self.loop.run_until_complete(self.client.request(method, url, headers=headers, **kw))

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.app.state.store.close()
