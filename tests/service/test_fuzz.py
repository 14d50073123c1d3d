"""Property and schema fuzzing: schemathesis against the app's own OpenAPI schema (no 5xx for anything it
sends), and hypothesis against the image decoder (any bytes → an image or a clear error) and the
corruptions (any level in [0, 1] → values in [0, 1], shape and dtype kept). Every run is bounded in examples.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, features
from schemathesis.checks import not_a_server_error

from models.corruptions import NOISE_TYPES, corrupt, make_generator
from service.app import create_app
from service.encoding import ANSWER_TYPES, encode_answer
from service.errors import BadImage, TooLarge
from service.images import ACCEPTED_FORMATS, load_picture, open_checked
from service.noise import NoiseSpec
from tests.conftest import FIXTURE_ROOT
from tests.service.conftest import LiveServer, encoded, serving, settings_for, wide_png, wide_tiff
from tests.service.test_metadata import camera_exif
from tests.service.test_photos import PRINT_PROFILE

PIXEL_LIMIT = 256 * 256


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    # A small pixel limit keeps each generated upload cheap; the limit itself is part of what is fuzzed.
    with serving(max_image_pixels=PIXEL_LIMIT, max_upload_bytes=256 * 1024) as server:
        yield server


_GRADIENT = Image.fromarray(np.tile(np.arange(0, 240, 8, dtype=np.uint8), (12, 1)))  # 30×12
# One small valid file per accepted format and a few modes: the seeds that mutations start from.
SEED_FILES = [
    encoded(_GRADIENT, "PNG"),
    encoded(_GRADIENT.convert("RGBA"), "PNG"),
    encoded(_GRADIENT.convert("P"), "PNG"),
    encoded(_GRADIENT, "JPEG"),
    encoded(_GRADIENT, "BMP"),
    encoded(_GRADIENT, "TIFF"),
    encoded(_GRADIENT.convert("CMYK"), "TIFF"),
    encoded(_GRADIENT, "WEBP"),
    encoded(_GRADIENT, "GIF"),
    # AVIF where this Pillow decodes it (its wheels since 11.3; a machine's own Pillow may be older)
    *([encoded(_GRADIENT.convert("RGB"), "AVIF")] if features.check("avif") else []),
    # 16 bits a sample in colour: read by pypng and tifffile (service.sixteen_bit), Pillow where they give up
    wide_png(np.dstack([np.asarray(_GRADIENT, dtype=np.uint16) * 257] * 3)),
    wide_tiff(np.dstack([np.asarray(_GRADIENT, dtype=np.uint16) * 257] * 3), photometric="rgb", compression="zlib"),
    # HEIC where pi-heif loads (service.images); it cannot write, so the phone photo of the fixtures
    *([(FIXTURE_ROOT / "phone" / "coffee-turned.heic").read_bytes()] if "HEIC" in ACCEPTED_FORMATS else []),
    *([(FIXTURE_ROOT / "phone" / "coffee-10bit.heic").read_bytes()] if "HEIC" in ACCEPTED_FORMATS else []),
    # A camera's JPEG: EXIF with sub-IFDs and an orientation (turned on decode, handed back on the answers)
    encoded(_GRADIENT.convert("RGB"), "JPEG", exif=camera_exif().tobytes()),
    # Print work: a CMYK JPEG with its press's profile, which littlecms reads in the decode child (service.cmyk);
    # most of the file is the profile, so most mutations land in it
    encoded(_GRADIENT.convert("CMYK"), "JPEG", icc_profile=PRINT_PROFILE),
]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image file with bytes flipped, inserted or cut: where decoders meet their edge cases."""
    data = bytearray(draw(st.sampled_from(SEED_FILES)))
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


# The schema the app publishes at /openapi.json, built without starting it (no models needed for that).
schema = schemathesis.openapi.from_dict(create_app(settings_for()).openapi())


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    derandomize=True,  # the same examples every run: a failure here is reproducible, never a flake
)
def test_no_request_the_schema_allows_or_mangles_gets_a_server_error(case: Any, live_server: LiveServer) -> None:
    # Generated "files" are strings no decoder accepts. For two cases in three a real image takes the file's
    # place (chosen from the case itself, so a failure replays), letting the generated fields reach the
    # model, the noise and the encoder.
    if isinstance(case.body, dict) and "file" in case.body:
        choice = zlib.crc32(repr(case.body).encode()) % (len(SEED_FILES) * 3 // 2)
        if choice < len(SEED_FILES):
            image = SEED_FILES[choice]
            case.body["file"] = [image, image] if isinstance(case.body["file"], list) else image
    response = case.call(base_url=live_server.url, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("detail"), str) and body["detail"], response.text


def _check_decoded_or_refused(data: bytes) -> None:
    """Decoded, and answered in every answer type with what it carries (colour profile, EXIF); or refused."""
    try:
        picture = load_picture(open_checked(data, PIXEL_LIMIT))
    except (BadImage, TooLarge) as exc:
        assert exc.detail and exc.status_code in (400, 413)
        return
    pixels = picture.planes
    assert pixels.dtype == np.float32 and pixels.ndim == 3
    assert 0 < pixels[0].size <= PIXEL_LIMIT
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0
    for answer_type in ANSWER_TYPES:
        assert encode_answer(pixels, picture, answer_type)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=4096))
def test_any_bytes_decode_to_an_image_or_a_clear_error(data: bytes) -> None:
    _check_decoded_or_refused(data)


@pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning")  # Pillow on damaged TIFFs
@settings(max_examples=400, deadline=None, derandomize=True)
@given(mutated_images())
def test_damaged_images_of_every_format_decode_or_are_refused_clearly(data: bytes) -> None:
    _check_decoded_or_refused(data)


levels = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_subnormal=True)
unit_images = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 12), st.integers(1, 12)),
    elements=st.floats(0.0, 1.0, width=32),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(clean=unit_images, noise=st.sampled_from(NOISE_TYPES), level=levels, seed=st.integers(0, 2**32 - 1))
def test_any_level_in_the_unit_range_keeps_values_shape_and_dtype(
    clean: np.ndarray, noise: str, level: float, seed: int
) -> None:
    x = torch.from_numpy(clean)
    noisy = corrupt(x, noise, level, make_generator(seed))
    assert noisy.shape == x.shape and noisy.dtype == x.dtype
    assert torch.isfinite(noisy).all()
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert torch.equal(x, torch.from_numpy(clean)), "the input was modified in place"


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    level=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0.0 <= v <= 1.0),
        st.sampled_from([math.nan, math.inf, -math.inf, -1e-12, 1.0000001]),
    ),
    noise=st.sampled_from([name for name in NOISE_TYPES if name != "none"]),
)
def test_a_level_outside_the_unit_range_is_an_error_not_a_clamp(level: float, noise: str) -> None:
    with pytest.raises(ValueError, match="level"):
        corrupt(torch.zeros(1, 1, 4, 4), noise, level)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    clean=arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.floats(0.0, 1.0, width=32)),
    noise=st.sampled_from(["gaussian", "salt_pepper", "masking", "mixed"]),
    level=levels,
    seed=st.integers(0, 2**32 - 1),
)
def test_the_services_noise_step_keeps_an_images_size_and_range(
    clean: np.ndarray, noise: Any, level: float, seed: int
) -> None:
    spec = NoiseSpec(noise, level, seed)
    noisy = spec.apply(clean)
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    assert np.isfinite(noisy).all() and noisy.min() >= 0.0 and noisy.max() <= 1.0
    np.testing.assert_array_equal(spec.apply(clean), noisy)  # the same spec, the same noise
