"""The request fields and response bodies of the HTTP API, as pydantic models (so /docs shows each field).

Form models forbid unknown fields: a misspelt field name (``image`` for ``file``) is a 422 naming it,
not a silently ignored option.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import UploadFile
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from models.corruptions import NOISES
from service.images import ACCEPTED_FORMATS
from service.noise import MAX_SEED


def _known_noise(name: str) -> str:
    if name not in NOISES:
        raise ValueError(f"unknown noise {name!r}: use one of {', '.join(NOISES)}")
    return name


# A string checked against ``models.corruptions.NOISES`` (the one list of noise types), shown as their enum.
NoiseName = Annotated[str, AfterValidator(_known_noise), WithJsonSchema({"type": "string", "enum": list(NOISES)})]
_NOISE_LIST = "; ".join(f"`{noise.name}`: {noise.level_means}" for noise in NOISES.values() if noise.name != "none")
_DEFAULTS = ", ".join(
    f"{noise.name} {noise.default_level:g}"
    + ("" if noise.photo_level == noise.default_level else f" ({noise.photo_level:g})")
    for noise in NOISES.values()
    if noise.name != "none"
)
_PNG_EXAMPLE = (
    "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAAAAACMmsGiAAAAEklEQVR4AWNgAIP//4EUmADSACfsA/3ZR/65AAAAAElFTkSuQmCC"  # 4×4
)
FILE_DESCRIPTION = f"the image: {ACCEPTED_FORMATS} (a GIF's or TIFF's first frame), any mode"
_FORM = ConfigDict(extra="forbid")


class NoiseOptions(BaseModel):
    """The corruption fields shared by /corrupt, /denoise and /denoise/batch."""

    model_config = _FORM

    level: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description=f"noise strength in [0, 1]. {_NOISE_LIST}. Default per noise, for a 28×28 digit (and in brackets "
        f"for any other image, a photo, where it differs): {_DEFAULTS}",
        examples=[0.3],
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="seed of the noise; the same seed and image give the same noise (random when left out, "
        "and reported)",
        examples=[42],
    )


class CorruptForm(NoiseOptions):
    file: UploadFile = Field(description=FILE_DESCRIPTION)
    noise: NoiseName = Field(description="which corruption to apply", examples=["gaussian"])


class DenoiseOptions(NoiseOptions):
    model: str | None = Field(
        default=None,
        description="a name from GET /models; when left out, the digit model for a 28×28 image and the photo model "
        "for any other (the response says which ran and why)",
        examples=["conv-blind"],
    )
    noise: NoiseName | None = Field(
        default=None,
        description="when given, the upload is taken as clean, corrupted with this noise first, and the errors "
        "against it are reported",
        examples=["gaussian"],
    )

    @model_validator(mode="after")
    def _noise_options_need_noise(self) -> DenoiseOptions:
        if self.noise is None and (self.level is not None or self.seed is not None):
            raise ValueError("level and seed only apply with noise: add noise (e.g. gaussian) or leave them out")
        return self


class DenoiseForm(DenoiseOptions):
    file: UploadFile = Field(description=FILE_DESCRIPTION)


class DenoiseBatchForm(DenoiseOptions):
    file: list[UploadFile] = Field(description="one or more images, each in its own 'file' field; answered in order")


class NoiseInfo(BaseModel):
    type: NoiseName = Field(examples=["gaussian"])
    level: float = Field(description="the level applied (the default when none was asked)", examples=[0.3])
    seed: int = Field(description="the seed used: send it back to get the same noise", examples=[42])


class DenoiseResponse(BaseModel):
    model: str = Field(description="the model that answered", examples=["conv-blind"])
    model_reason: str = Field(
        description="why that model: named in the request, or chosen for the image (a 28×28 digit or a photo)",
        examples=["no model named: a 28×28 image goes to the digit model"],
    )
    width: int = Field(description="width of the returned images (a fixed-size model's input size)", examples=[28])
    height: int = Field(description="height of the returned images", examples=[28])
    reconstruction_mse: float = Field(
        description="MSE between the model's input and its output: the autoencoder's reconstruction error",
        examples=[0.0123],
    )
    denoised_png: str = Field(
        description="the model's output, a PNG (base64) of the upload's kind: grey or colour, alpha and 16 bits kept",
        examples=[_PNG_EXAMPLE],
    )
    latency_ms: float = Field(description="time spent in the service on this image", examples=[3.2])
    noise: NoiseInfo | None = Field(default=None, description="with noise: the corruption applied")
    noisy_png: str | None = Field(
        default=None, description="with noise: the corrupted input, PNG base64", examples=[_PNG_EXAMPLE]
    )
    noisy_mse: float | None = Field(default=None, description="with noise: MSE of noisy vs clean", examples=[0.046])
    noisy_psnr_db: float | None = Field(
        default=None, description="with noise: PSNR of noisy vs clean (dB)", examples=[13.4]
    )
    denoised_mse: float | None = Field(
        default=None, description="with noise: MSE of denoised vs clean", examples=[0.011]
    )
    denoised_psnr_db: float | None = Field(
        default=None, description="with noise: PSNR of denoised vs clean (dB)", examples=[19.6]
    )


class BatchItem(BaseModel):
    filename: str | None = Field(description="the upload's file name", examples=["digit-7.png"])
    status_code: int = Field(description="200, or the status this image alone would have got", examples=[200])
    detail: str | None = Field(default=None, description="what went wrong with this image", examples=[None])
    result: DenoiseResponse | None = Field(default=None, description="the answer, when status_code is 200")


class BatchResponse(BaseModel):
    results: list[BatchItem] = Field(description="one item per uploaded file, in upload order")


class ModelInfo(BaseModel):
    name: str = Field(examples=["conv-blind"])
    architecture: str = Field(examples=["conv"])
    parameters: int = Field(description="number of weights", examples=[262297])
    input_size: list[int] | None = Field(description="[height, width], or null for any size", examples=[None])
    dataset: str = Field(examples=["mnist"])
    noise: str = Field(description="the noise it was trained on", examples=["mixed"])
    noise_level: float = Field(description="the training noise level", examples=[0.5])
    epochs: int = Field(examples=[20])
    hyperparameters: dict[str, object] = Field(examples=[{"channels": 24, "depth": 2}])
    test_metrics: dict[str, dict[str, float]] = Field(
        description="figures on the test split by noise@level",
        examples=[{"gaussian@0.3": {"mse": 0.009, "psnr_db": 21.1, "ssim": 0.91, "noisy_psnr_db": 13.3}}],
    )
    inference_dtype: str = Field(
        description="precision of the forward pass here: float32, or bfloat16 (DAE_INFERENCE_DTYPE)",
        examples=["bfloat16"],
    )
    inference_backend: Literal["loop", "thread", "process"] = Field(
        description="where its forward passes run here: the worker's event loop, its inference threads, or its "
        "child process (DAE_INFERENCE_BACKEND)",
        examples=["process"],
    )
    default: bool = Field(description="whether requests naming no model get this one", examples=[True])


class ModelsResponse(BaseModel):
    default_model: str = Field(examples=["conv-blind"])
    models: list[ModelInfo]


class NoiseInfoEntry(BaseModel):
    name: str = Field(description="the value of the noise field", examples=["salt_pepper"])
    label: str = Field(description="how to show it to people", examples=["salt & pepper"])
    level_means: str = Field(examples=["probability a pixel is replaced by 0 or 1"])
    default_level: float = Field(examples=[0.2])
    photo_level: float = Field(
        description="where the demo page starts a photo: within what the photo model was trained on", examples=[0.2]
    )


class NoisesResponse(BaseModel):
    noises: list[NoiseInfoEntry] = Field(description="every noise type the service applies, in display order")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    models: list[str] = Field(description="the models loaded and warmed up", examples=[["conv-blind", "mlp-gaussian"]])


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong and what to change", examples=["no model named 'x'; loaded: ..."])


class FieldError(BaseModel):
    field: str = Field(examples=["level"])
    message: str = Field(examples=["Input should be less than or equal to 1"])


class ValidationErrorResponse(ErrorResponse):
    errors: list[FieldError] = Field(description="one entry per field at fault")
