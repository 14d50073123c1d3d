"""The floor of the serving benchmark: a one-file FastAPI app that decodes the upload and encodes a PNG.

No model and no batcher: what HTTP, multipart parsing and the image codecs allow on this machine. It
uses the service's own decode and encode, so the distance from it to the service is exactly what the
model, the batcher and the service's bookkeeping cost.

    uvicorn bench.serve_floor:app --port 8001
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Form, UploadFile
from fastapi.responses import Response

from service.encoding import encode_png
from service.images import decode_image

MAX_PIXELS = 2048 * 2048

app = FastAPI(title="serving floor")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/denoise")
async def denoise(file: UploadFile, model: Annotated[str | None, Form()] = None) -> Response:
    image = decode_image(await file.read(), MAX_PIXELS)
    return Response(encode_png(image), media_type="image/png")
