"""An upload's body → a validated pydantic form model and the uploaded bytes, and its OpenAPI description.

A body is a multipart form (the image in field ``file``, the options as fields), or the image itself
(``Content-Type: image/*`` or ``application/octet-stream``: ``curl --data-binary``, ``fetch`` with a Blob)
with the options in the query string. Either way the same model validates the same fields.

The upload routes parse their form here rather than through FastAPI's ``Annotated[Model, Form()]``:
FastAPI's per-field extraction of a form model costs the event loop more per request than decoding
the image, where parsing the form with Starlette and validating it with the same pydantic model costs
little (docs/benchmarks.md, "Serving costs", measures both). The model still describes the body in
/docs (``form_body``) and still produces FastAPI's 422 errors.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from io import BytesIO
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from service.errors import BadForm, ClientGone, UnsupportedBody

FormModel = TypeVar("FormModel", bound=BaseModel)


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


def _is_list_field(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and typing.get_origin(field.annotation) is list


HOW_TO_SEND = (
    "send the image as a multipart/form-data field named 'file' (curl -F file=@photo.jpg), or as the body itself "
    "with Content-Type image/* and the options in the query string (curl --data-binary @photo.jpg "
    "-H 'Content-Type: image/jpeg' 'URL?model=photo-blind')"
)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _whole_body(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:
        raise ClientGone("the client went away before sending the whole body") from None


def _validated(model: type[FormModel], values: dict[str, Any], where: str) -> FormModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [{**error, "loc": (where, *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _query_values(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    """The options given in the query string, as the form's fields would give them."""
    params = request.query_params
    return {key: params.getlist(key) if _is_list_field(model, key) else params.getlist(key)[-1] for key in params}


async def read_form(request: Request, model: type[FormModel], max_files: int) -> tuple[FormModel, list[Upload]]:
    """Parse the body, validate it with ``model`` (422 as FastAPI would), read every upload.

    A multipart body: its fields and files, with any options of the query string (a field may not be given in
    both); an image body: the one upload, with the options of the query string. Returns the model and the uploads
    in the order sent; the spooled files are closed before returning.
    """
    media_type = _media_type(request)
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return await _read_image_body(request, model)
    if media_type == "application/x-www-form-urlencoded":
        await _refuse_binary_form(request)
    query = _query_values(request, model)
    try:
        async with request.form(max_files=max_files) as form:
            values: dict[str, Any] = dict(query)
            for key in form:
                if key in query:
                    raise RequestValidationError(
                        [{"type": "given_twice", "loc": ("query", key), "msg": "given both in the query and the form"}]
                    )
                items = form.getlist(key)
                values[key] = items if _is_list_field(model, key) else items[-1]
            parsed = _validated(model, values, "body")
            uploads = [
                Upload(item.filename, await item.read())
                for key in form
                for item in form.getlist(key)
                if isinstance(item, StarletteUploadFile)
            ]
    except (HTTPException, RequestValidationError):
        raise
    except ClientDisconnect:
        raise ClientGone("the client went away before sending the whole body") from None
    except Exception as exc:  # whatever python-multipart makes of a malformed body is the client's to fix
        raise BadForm(f"the body is not valid multipart/form-data ({exc}); {HOW_TO_SEND}") from None
    return parsed, uploads


async def _refuse_binary_form(request: Request) -> None:
    """415 for binary bytes sent as a urlencoded form: ``curl --data-binary @photo.jpg`` names no type, so curl
    says application/x-www-form-urlencoded. Such a form is ASCII text (anything else is %-escaped), and every
    image format's header has bytes that are not; read as name=value pairs, the image would come back as an
    unknown field megabytes long. (A real urlencoded form carries no file either, but its fields earn their 422s.)
    """
    head = (await _whole_body(request))[:4096]  # Starlette keeps the body: request.form() reads it again
    if any(byte >= 0x80 or (byte < 0x20 and byte not in b"\t\n\r") for byte in head):
        raise UnsupportedBody(
            "the body is binary data sent as application/x-www-form-urlencoded (curl --data-binary names that "
            f"type unless told): {HOW_TO_SEND}"
        )


async def _read_image_body(request: Request, model: type[FormModel]) -> tuple[FormModel, list[Upload]]:
    """The body is the image: one upload, the options from the query string."""
    values = _query_values(request, model)
    if "file" in values:
        raise RequestValidationError(
            [{"type": "given_twice", "loc": ("query", "file"), "msg": "the image is the body here, not a field"}]
        )
    data = await _whole_body(request)
    # The form model checks a file is there; this one stands for the body (never read: ``data`` is).
    placeholder = StarletteUploadFile(BytesIO(), filename=None)
    values["file"] = [placeholder] if _is_list_field(model, "file") else placeholder
    return _validated(model, values, "query"), [Upload(None, data)]


def form_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` with ``read_form``: the same schema FastAPI shows."""
    schema = model.model_json_schema()
    # The image first, then the fields in the order a person fills them (pydantic lists inherited ones first).
    order = {name: rank for rank, name in enumerate(("file", "model", "noise", "level", "seed"))}
    schema["properties"] = dict(sorted(schema["properties"].items(), key=lambda item: order.get(item[0], len(order))))
    binary = {"schema": {"type": "string", "format": "binary"}}
    options = [
        {"name": name, "in": "query", "required": False, "schema": field, "description": field.get("description", "")}
        for name, field in schema["properties"].items()
        if name != "file"
    ]
    return {
        "parameters": options,
        "requestBody": {
            "required": True,
            "description": "a multipart form, the image in 'file' and the options as fields (or in the query "
            "string); or the image itself as the body (image/*, application/octet-stream), the options in the "
            "query string",
            "content": {
                "multipart/form-data": {"schema": schema},
                "image/*": binary,
                "application/octet-stream": binary,
            },
        },
    }
