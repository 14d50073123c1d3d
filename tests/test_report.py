"""``dae-report --quick`` on the fixture: every table and figure of the study is produced and consistent.

The report is generated once for this module and each test reads it: 16 tiny models trained on the fixture,
then every section on 100 test images (a few minutes on 2 busy cores).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from tests.conftest import FIXTURE_ROOT
from training.cli import report_main
from training.data import load_split
from training.study import classical
from training.study.config import StudyConfig
from training.study.domains import photo_crops, sklearn_digits
from training.study.markdown import delta_db
from training.study.scoring import GAUSSIAN, Noise, Score, Scorer
from training.study.scoring import TestSet as StudyTestSet
from training.study.zoo import SPEC_BY_NAME, SPECS, ModelZoo, base_name, seed_of

pytestmark = pytest.mark.slow

SECTIONS = (
    "examples",
    "dae-vs-ae",
    "noise-level",
    "robustness",
    "features",
    "iterative",
    "blind",
    "blindness",
    "unseen",
    "classical",
    "fashion",
    "domains",
    "photos",
    "cost",
)
FIGURES = {
    "examples": ("grid_gaussian.png", "grid_salt_pepper.png", "grid_masking.png", "noise_comparison.png"),
    "dae-vs-ae": ("dae_vs_ae.png",),
    "noise-level": ("noise_level.png",),
    "robustness": ("robustness.png",),
    "features": ("filters.png", "latent_correlation.png"),
    "iterative": ("iterative.png", "iterative_examples.png"),
    "blind": ("blind.png",),
    "blindness": ("blindness.png",),
    "unseen": ("unseen.png", "unseen_examples.png"),
    "classical": ("classical.png",),
    "fashion": ("fashion.png",),
    "domains": ("domains.png",),
    "photos": (),
    "cost": (),
}
NUMBER = re.compile(r"(?<![\d.])\d+\.\d+")
ABSOLUTE_DB = re.compile(r"(?<![+−\d.])(\d+\.\d{2}) dB")  # "19.01 dB", not a signed difference "+1.20 dB"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    args = ["--quick", "--data-root", str(FIXTURE_ROOT), "--device", "auto"]
    assert report_main([*args, "--out", str(root / "report.md"), "--cache", str(root / "cache")]) == 0
    return root / "report.md"


def sections_of(text: str) -> dict[str, str]:
    """Section key → its markdown, from one numbered heading to the next."""
    parts = re.split(r"\n(?=## )", text)
    found = {}
    for part in parts:
        anchor = re.search(r'<a id="([\w-]+)"></a>', part)
        if anchor:
            found[anchor.group(1)] = part
    return found


def tables_of(section: str) -> str:
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def findings_of(section: str) -> str:
    match = re.search(r"^\*\*Findings\.\*\* (.+)$", section, re.MULTILINE)
    assert match, "section has no findings"
    return match.group(1)


def test_every_section_has_a_table_that_says_what_it_measured(report: Path) -> None:
    sections = sections_of(report.read_text())
    assert list(sections) == list(SECTIONS)
    for key, section in sections.items():
        assert tables_of(section).count("\n") >= 2, f"{key}: no table"
        assert "noise seed 1234" in section, key
        assert "test images" in section or "test split" in section, key
        assert "Command: `dae-report --quick" in section, key
        assert "PSNR" in section and "SSIM" in section, key


def test_every_figure_is_written_referenced_and_opens(report: Path) -> None:
    sections = sections_of(report.read_text())
    for key, names in FIGURES.items():
        for name in names:
            assert f"](figures/{name})" in sections[key], f"{key} does not show {name}"
            path = report.parent / "figures" / name
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                assert image.format == "PNG"
                assert image.width >= 300 and image.height >= 150, f"{name} is {image.size}"


def test_findings_quote_the_numbers_of_the_tables(report: Path) -> None:
    text = report.read_text()
    all_tables = tables_of(text)
    for key, section in sections_of(text).items():
        findings = findings_of(section)
        own = set(NUMBER.findall(tables_of(section)))
        assert own & set(NUMBER.findall(findings)), f"{key}: findings quote no number of the table"
        for value in ABSOLUTE_DB.findall(findings):
            assert value in all_tables, f"{key}: {value} dB is in the findings but in no table"


def test_report_states_how_long_it_took_and_which_models(report: Path) -> None:
    text = report.read_text()
    assert re.search(r"The whole run took \d", text)
    assert "## Run time" in text
    for spec in SPECS:
        assert f"| {spec.name} |" in text


def test_a_second_run_finds_every_model_in_the_cache(report: Path) -> None:
    cfg = StudyConfig(FIXTURE_ROOT, report, report.parent / "cache", Path("checkpoints"), quick=True)
    zoo = ModelZoo(cfg, lambda _: None)
    zoo.prepare()
    assert {p.source for p in zoo.provenance.values()} == {"cache"}


def test_only_reruns_the_named_sections_in_place_and_says_so(report: Path, tmp_path: Path) -> None:
    copy = tmp_path / "report.md"
    copy.write_text(report.read_text())
    common = ["--quick", "--data-root", str(FIXTURE_ROOT), "--out", str(copy), "--cache", str(report.parent / "cache")]
    assert report_main([*common, "--only", "photos", "classical"]) == 0
    assert report_main([*common, "--only", "domains"]) == 0
    before, after = sections_of(report.read_text()), sections_of(copy.read_text())
    assert list(after) == list(SECTIONS)
    for key in SECTIONS:
        if key not in ("photos", "classical", "domains"):
            assert after[key] == before[key], f"{key} changed, though not named"
    assert after["classical"].startswith("## 10. ") and "--only photos classical`" in after["classical"]
    assert after["domains"].startswith("## 12. ") and "--only domains`" in after["domains"]
    header = copy.read_text().split("**Models**")[0]
    first, second = header.index("**Re-run:** sections 10, 13 by"), header.index("**Re-run:** section 12 by")
    assert header.index("Generated by") < first < second, "the notes follow the header, oldest first"
    assert copy.read_text().split("## Run time")[1] == report.read_text().split("## Run time")[1]


def test_only_trains_just_the_models_its_sections_use(report: Path, tmp_path: Path) -> None:
    """A re-run of one section after a model changed must not first train the whole study (hours at full scale)."""
    copy, cache = tmp_path / "report.md", tmp_path / "cache"
    copy.write_text(report.read_text())
    common = ["--quick", "--data-root", str(FIXTURE_ROOT), "--out", str(copy), "--cache", str(cache)]
    assert report_main([*common, "--only", "domains"]) == 0
    trained = sorted(path.stem for path in (cache / "quick").glob("*.json"))
    assert trained == ["conv-blind", "conv-blind-fashion", "mlp-gaussian"]  # domains.DOMAIN_MODELS, no other
    assert "--only domains`" in sections_of(copy.read_text())["domains"]


def test_only_knows_its_sections_and_needs_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "report.md"
    existing.write_text("# a report\n")
    common = ["--quick", "--data-root", str(FIXTURE_ROOT), "--cache", str(tmp_path / "cache")]
    assert report_main([*common, "--out", str(existing), "--only", "photo"]) == 2
    assert "no section photo; the sections are examples, dae-vs-ae" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        report_main([*common, "--out", str(tmp_path / "none.md"), "--only", "photos"])
    assert stopped.value.code == 2
    assert "is not one: run without --only" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists(), "nothing was trained for a command that could not run"


def test_a_sample_holds_the_same_noisy_pixels_as_the_whole_split(mnist_test_images: torch.Tensor) -> None:
    full = StudyTestSet("mnist", mnist_test_images, torch.zeros(len(mnist_test_images), dtype=torch.long))
    sample = full.sample(20)
    combined = Noise((("gaussian", 0.3), ("masking", 0.3)))
    for noise in (GAUSSIAN, combined):
        assert torch.equal(sample.noisy(noise), full.noisy(noise)[sample.index])
    assert torch.equal(full.noisy(combined), full.noisy(combined)), "noise is a function of the seed alone"


def test_the_median_window_is_tuned_on_train_images_and_widens_with_the_noise() -> None:
    images, _ = load_split("mnist", "train", FIXTURE_ROOT)
    clean = (images[:200].float() / 255).unsqueeze(1)
    light, heavy = (classical.tune("median", Noise.of("salt_pepper", p), clean, 1) for p in (0.1, 0.7))
    assert light.params["size"] < heavy.params["size"], (light.describe(), heavy.describe())
    assert heavy.train_psnr is not None and light.train_psnr is not None
    noisy = Noise.of("salt_pepper", 0.7).apply(clean, classical.TUNING_SEED)
    three = classical.run("median", noisy, heavy.sigma, 1, {"size": 3})
    assert heavy.train_psnr > Score.of(three, clean).psnr + 0.5, "the wider window must pay off where it is chosen"


def test_differences_are_signed_so_they_never_read_as_table_values() -> None:
    assert delta_db(1.234) == "+1.23 dB" and delta_db(-0.5) == "−0.50 dB"
    assert not ABSOLUTE_DB.findall(f"by {delta_db(-0.5)}")


SIGNED = r"([+−]\d+\.\d+)"
INTERVAL = re.compile(rf"{SIGNED}(?: dB)? \[{SIGNED}, {SIGNED}\]")
# The only ways the findings may say "best": with the leader's interval, or counting clear wins.
BEST_FORMS = re.compile(
    rf"is best \({SIGNED} dB \[{SIGNED}, {SIGNED}\]|is best, its interval clear of every other model|"
    r"clearly best|clearly the best|best or tied for best|indistinguishable from the best"
)


def number(text: str) -> float:
    return float(text.replace("−", "-"))


def test_the_header_records_command_machine_and_run_time(report: Path) -> None:
    header = report.read_text().split("**Models**")[0]
    assert "Generated by `dae-report --quick --data-root" in header
    assert "machine: " in header and "logical cores" in header and "torch " in header
    assert re.search(r"The whole run took \d", header)


def test_every_table_shows_the_noisy_input(report: Path) -> None:
    for key, section in sections_of(report.read_text()).items():
        assert "noisy input" in tables_of(section), f"{key}: no noisy-input row or column"


def test_no_win_is_claimed_where_the_interval_contains_zero(report: Path) -> None:
    for key, section in sections_of(report.read_text()).items():
        findings = findings_of(section)
        for match in re.finditer(r"\bbest\b", findings):
            around = findings[max(0, match.start() - 40) : match.end() + 60]
            form = BEST_FORMS.search(around)
            assert form, f"{key}: 'best' without an interval or a count of clear wins: …{around}…"
            if form.group(2):
                assert number(form.group(2)) >= 0, f"{key}: 'best' inside an interval: {form.group(0)}"
        for match in re.finditer(rf"beats [^;]*? by {INTERVAL.pattern}", findings):
            assert number(match.group(2)) >= 0, f"{key}: a win inside an interval: {match.group(0)}"
        for match in re.finditer(rf"indistinguishable[^;]*?Δ {INTERVAL.pattern}", findings):
            lo, hi = number(match.group(2)), number(match.group(3))
            assert lo <= 0 <= hi, f"{key}: 'indistinguishable' with an interval clear of 0: {match.group(0)}"


@pytest.mark.parametrize("option", ["--train-seeds", "--noise-seeds"])
def test_seed_counts_below_one_are_refused(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        report_main([option, "0"])
    assert exited.value.code == 2
    assert f"{option} must be 1 or more" in capsys.readouterr().err


def test_the_out_of_domain_digits_and_photo_crops_are_framed_as_mnist() -> None:
    digits = sklearn_digits()
    assert digits.images.shape == (1797, 28, 28) and digits.images.dtype == torch.uint8
    assert int(digits.images.max()) == 255  # 16, the 8×8 digits' full intensity, maps to white
    frame = digits.images.clone()
    frame[:, 4:24, 4:24] = 0
    assert int(frame.max()) == 0  # a 20×20 digit in a blank 4-pixel border, as MNIST centres its digits
    crops = photo_crops(FIXTURE_ROOT)
    assert crops.images.shape[1:] == (28, 28) and len(crops) == 16 * len(set(crops.labels.tolist()))
    assert crops.describe() == f"all {len(crops)} Set12 crop (28×28) images"


def test_train_only_trains_the_named_models_into_the_cache_and_writes_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache, out = tmp_path / "cache", tmp_path / "report.md"
    args = ["--quick", "--data-root", str(FIXTURE_ROOT), "--out", str(out), "--cache", str(cache)]
    assert report_main([*args, "--train-only", "mlp-gaussian-0.1"]) == 0
    trained = sorted(path.name for path in (cache / "quick").iterdir())
    assert trained == ["mlp-gaussian-0.1.json", "mlp-gaussian-0.1.safetensors"]
    assert not out.exists()
    assert report_main([*args, "--train-only", "no-such-model"]) == 2
    assert "unknown study model(s): no-such-model" in capsys.readouterr().err


# Run in a fresh interpreter where the study extra's packages cannot be imported, as on a machine with torch alone.
WITHOUT_STUDY_EXTRA = """
import builtins, sys
real_import = builtins.__import__
def without_study_extra(name, *args, **kwargs):
    if name.split(".")[0] in ("matplotlib", "skimage", "sklearn", "scipy", "bm3d"):
        raise ImportError(f"{name} is not installed here")
    return real_import(name, *args, **kwargs)
builtins.__import__ = without_study_extra
from training.cli import report_main
sys.exit(report_main(sys.argv[1:]))
"""


def test_train_only_needs_torch_alone_not_the_study_extra(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["--quick", "--data-root", str(FIXTURE_ROOT), "--cache", str(cache), "--out", str(tmp_path / "r.md")]
    ran = subprocess.run(
        [sys.executable, "-c", WITHOUT_STUDY_EXTRA, *args, "--train-only", "mlp-mixed"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (cache / "quick" / "mlp-mixed.safetensors").is_file()
    # the report itself does need the extra, and says how to install it
    report = subprocess.run(
        [sys.executable, "-c", WITHOUT_STUDY_EXTRA, *args], capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert report.returncode == 2 and "needs the study extra" in report.stderr and ".[study]" in report.stderr


STUDY_CACHE = Path(__file__).parents[1] / "cache" / "study"


def test_the_committed_study_unets_are_what_the_study_would_train_and_they_denoise(
    tmp_path: Path, mnist_test_images: torch.Tensor
) -> None:
    committed = sorted(STUDY_CACHE.glob("conv-*.json"))
    assert committed, f"no study U-Net committed in {STUDY_CACHE}"
    cfg = StudyConfig(FIXTURE_ROOT, tmp_path / "report.md", STUDY_CACHE, Path("checkpoints"))
    zoo = ModelZoo(cfg, lambda _: None)
    test = StudyTestSet("mnist", mnist_test_images[:100], torch.zeros(100, dtype=torch.long))
    for card_path in committed:
        name, path = card_path.stem, card_path.with_suffix("")
        spec = SPEC_BY_NAME[base_name(name)]
        # a recipe that drifted from the study's would be retrained by the next report, not found
        assert zoo.cached_card(path, zoo.recipe(spec, path, seed_of(name))) is not None, f"{name}: retrain it"
        model, _ = load_checkpoint(path, "cpu")  # the weights match the card's digest
        noise = GAUSSIAN if spec.noise == "mixed" else Noise.of(spec.noise, spec.level)
        scorer = Scorer({name: model}.__getitem__)
        gain = scorer.score(name, test, noise).psnr - scorer.score(None, test, noise).psnr
        assert gain > 6, f"{name} gains only {gain:.2f} dB on {noise.label}"
