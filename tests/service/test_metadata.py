"""What an answer keeps of its upload besides the pixels: the EXIF (when and with what a photo was taken), its
orientation done; through the real app (the colour profile's tests are in test_photos and test_images)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import ExifTags, Image

from service.images import ACCEPTED_FORMATS
from service.metadata import answer_exif
from tests.conftest import FIXTURE_ROOT
from tests.service.conftest import AppClient, denoise, encoded, upload

TAKEN = "2026:11:28 09:41:00"


def camera_exif(orientation: int = 6) -> Image.Exif:
    """A camera's EXIF: make, model, when (DateTimeOriginal, in the Exif IFD), ISO, where (GPS), how to turn it."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = "Canon", "EOS R5"
    exif[ExifTags.Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal], details[ExifTags.Base.ISOSpeedRatings] = TAKEN, 6400
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    return exif


def coffee_jpeg(**options: object) -> bytes:
    crop = Image.open(FIXTURE_ROOT / "colour" / "coffee.png").convert("RGB").crop((0, 0, 96, 64))
    return encoded(crop, "JPEG", quality=95, **options)


@pytest.mark.parametrize("answer_type", ["image/png", "image/jpeg", "image/webp", "json"])
def test_a_photos_exif_comes_back_on_its_answer_with_its_orientation_done(client: AppClient, answer_type: str) -> None:
    """A camera photo, turned by its EXIF (6: 90° clockwise): the answer is turned, and its EXIF keeps when, with
    what and where it was taken but says nothing of turning, or a viewer would turn it a second time."""
    data = coffee_jpeg(exif=camera_exif().tobytes())
    if answer_type == "json":
        answers = [
            base64.b64decode(denoise(client, data, noise="gaussian", seed=3)[field])
            for field in ("denoised_png", "noisy_png")
        ]
        answers.append(client.post("/corrupt", files=upload(data), data={"noise": "masking"}).content)
    else:
        response = client.post("/denoise", files=upload(data), headers={"Accept": answer_type})
        assert response.status_code == 200 and response.headers["content-type"] == answer_type
        answers = [response.content]
    for answer in answers:
        image = Image.open(io.BytesIO(answer))
        assert image.size == (64, 96)  # 96×64 turned
        exif = image.getexif()
        assert (exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model)) == ("Canon", "EOS R5")
        assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == TAKEN
        assert exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"
        assert exif.get(ExifTags.Base.Orientation, 1) == 1


def test_an_exif_that_only_said_how_to_turn_leaves_nothing_and_a_damaged_one_is_dropped(client: AppClient) -> None:
    turned_only = Image.Exif()
    turned_only[ExifTags.Base.Orientation] = 8
    damaged = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + bytes(range(256)) * 4  # an IFD of 65,535 entries
    for exif in (turned_only.tobytes(), damaged):
        response = client.post("/denoise", files=upload(coffee_jpeg(exif=exif)), headers={"Accept": "image/jpeg"})
        assert response.status_code == 200, response.text
        assert not Image.open(io.BytesIO(response.content)).getexif()


def test_an_exif_pillow_cannot_write_back_still_gives_the_turned_photo(client: AppClient) -> None:
    """Found by fuzzing: the Model tag's number changed to TileLength's, a number tag holding text. Pillow turns
    the photo, then fails to write the EXIF back without its orientation (struct.error): that was a 500."""
    raw = camera_exif().tobytes()
    model = ExifTags.Base.Model.to_bytes(2, "big") + b"\x00\x02"  # the tag and its type, ASCII (Pillow writes "MM")
    assert raw.count(model) == 1
    data = coffee_jpeg(exif=raw.replace(model, ExifTags.Base.TileLength.to_bytes(2, "big") + b"\x00\x02"))
    response = client.post("/denoise", files=upload(data), headers={"Accept": "image/png"})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (64, 96)  # turned as the EXIF said


def test_an_exif_too_long_for_a_jpeg_is_left_off_a_jpeg_answer_only(client: AppClient) -> None:
    """A PNG's eXIf may be longer than a JPEG's one APP1 segment holds (65,535 bytes)."""
    exif = Image.Exif()
    exif[ExifTags.Base.ImageDescription] = "a long caption " * 8000  # 120 kB
    buffer = io.BytesIO()
    Image.open(FIXTURE_ROOT / "colour" / "coffee.png").save(buffer, "PNG", exif=exif.tobytes())
    kept = {}
    for answer_type in ("image/jpeg", "image/png", "image/webp"):
        response = client.post("/denoise", files=upload(buffer.getvalue()), headers={"Accept": answer_type})
        assert response.status_code == 200, response.text
        kept[answer_type] = ExifTags.Base.ImageDescription in Image.open(io.BytesIO(response.content)).getexif()
    assert kept == {"image/jpeg": False, "image/png": True, "image/webp": True}


def test_a_pngs_orientation_is_handed_back_as_the_png_is_not_turned(client: AppClient) -> None:
    """The service does not turn a PNG by its eXIf orientation (Pillow does not either): its answer keeps the
    orientation, so a viewer that applies it shows the answer as it showed the upload."""
    buffer = io.BytesIO()
    Image.open(FIXTURE_ROOT / "colour" / "coffee.png").save(buffer, "PNG", exif=camera_exif(orientation=6).tobytes())
    response = client.post("/denoise", files=upload(buffer.getvalue()), headers={"Accept": "image/png"})
    answer = Image.open(io.BytesIO(response.content))
    assert answer.size == (96, 96) and answer.getexif()[ExifTags.Base.Orientation] == 6
    assert answer.getexif()[ExifTags.Base.Make] == "Canon"


def test_a_tiffs_own_tags_are_not_taken_for_exif() -> None:
    """A TIFF's tags describe its strips and compression: none of them belongs on a PNG or a JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "TIFF", compression="tiff_deflate")
    assert answer_exif(Image.open(buffer)) is None


@pytest.mark.skipif("HEIC" not in ACCEPTED_FORMATS, reason="pi-heif does not load here")
def test_a_heic_phone_photo_turned_by_its_file_is_not_turned_again(client: AppClient) -> None:
    """The HEIC fixture carries orientation 6 in its EXIF beside the file's own transform, which libheif applies:
    the answer is 48×64 and its EXIF (if any) does not ask for a turn."""
    heic = (FIXTURE_ROOT / "phone" / "coffee-turned.heic").read_bytes()
    response = client.post("/denoise", files=upload(heic), headers={"Accept": "image/jpeg"})
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (48, 64) and image.getexif().get(ExifTags.Base.Orientation, 1) == 1
    assert np.asarray(image).shape == (64, 48, 3)
