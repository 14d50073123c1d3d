"""The naive peer of the serving benchmark: the floor app running the model inside the endpoint.

What a user writes from the tutorial: load the model at import, and per request decode, run one forward
pass on one image, encode. No batching, torch at its default threads. The model is
``$SERVE_NAIVE_MODEL`` (default conv-blind) from ``$DAE_CHECKPOINT_DIR`` (default the shipped folder).

    SERVE_NAIVE_MODEL=mlp-gaussian uvicorn bench.serve_naive:app --port 8002
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import torch
from fastapi import FastAPI, Form, UploadFile
from fastapi.responses import Response

from models.checkpoint import load_checkpoint
from service.encoding import encode_png
from service.images import decode_image, resize
from service.settings import shipped_checkpoint_dir

MAX_PIXELS = 2048 * 2048
CHECKPOINT_DIR = Path(os.environ.get("DAE_CHECKPOINT_DIR") or shipped_checkpoint_dir())
net, card = load_checkpoint(CHECKPOINT_DIR / f"{os.environ.get('SERVE_NAIVE_MODEL', 'conv-blind')}.json")

app = FastAPI(title="naive serving peer")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/denoise")
async def denoise(file: UploadFile, model: Annotated[str | None, Form()] = None) -> Response:
    image = decode_image(await file.read(), MAX_PIXELS)
    if card.input_size:
        image = resize(image, card.input_size)
    with torch.no_grad():
        output = net(torch.from_numpy(image)[None, None])[0, 0].numpy()
    return Response(encode_png(output), media_type="image/png")
