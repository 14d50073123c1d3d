"""Multipart form → a validated pydantic form model and the uploaded bytes, and its OpenAPI description.

The upload routes parse their form here rather than through FastAPI's ``Annotated[Model, Form()]``:
FastAPI's per-field extraction of a form model costs the event loop more per request than decoding
the image, where parsing the form with Starlette and validating it with the same pydantic model costs
little (docs/benchmarks.md, "Serving costs", measures both). The model still describes the body in
/docs (``form_body``) and still produces FastAPI's 422 errors.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from service.errors import BadForm, ClientGone

FormModel = TypeVar("FormModel", bound=BaseModel)


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


def _is_list_field(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and typing.get_origin(field.annotation) is list


async def read_form(request: Request, model: type[FormModel], max_files: int) -> tuple[FormModel, list[Upload]]:
    """Parse the multipart body, validate it with ``model`` (422 as FastAPI would), read every upload.

    Returns the model and the uploads in the order sent; the spooled files are closed before returning.
    """
    try:
        async with request.form(max_files=max_files) as form:
            values: dict[str, Any] = {}
            for key in form:
                items = form.getlist(key)
                values[key] = items if _is_list_field(model, key) else items[-1]
            try:
                parsed = model.model_validate(values)
            except ValidationError as exc:
                errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
                raise RequestValidationError(errors) from None
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
        raise BadForm(f"the body is not valid multipart/form-data ({exc}); send the image in field 'file'") from None
    return parsed, uploads


def form_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` with ``read_form``: the same schema FastAPI shows."""
    schema = model.model_json_schema()
    # The image first, then the fields in the order a person fills them (pydantic lists inherited ones first).
    order = {name: rank for rank, name in enumerate(("file", "model", "noise", "level", "seed"))}
    schema["properties"] = dict(sorted(schema["properties"].items(), key=lambda item: order.get(item[0], len(order))))
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
