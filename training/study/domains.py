"""Out of domain: the digit models on other digits, on clothes and on photos; then the photo model's own table.

A model applied outside the images it was trained on can return them worse than they came in (the service
once turned a noisy photo at 20.3 dB into 11.3 dB with the digit U-Net). Every domain is shown to the models
as MNIST is, 28×28 images in [0, 1], so the MLPs can take them too:

- **scikit-learn's digits**: the 1,797 8×8 digits bundled with scikit-learn (no download), their 0–16
  intensities scaled to 0–255 and upscaled to 20×20 in a 28×28 frame, as MNIST centres its digits;
- **Fashion-MNIST**: its test split (the data set ``conv-blind-fashion`` was trained on);
- **photo crops**: 28×28 crops on a fixed grid of the BSD68 test photos (Set12 when BSD68 is absent), never
  trained on by any model here.

The photo section reads the photo model's evaluation from its card (``dae-eval`` on Set12 and BSD68 in the
papers' protocol, BM3D and the best tuned classical filter measured on the same noisy images) and sets the
published figures beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.data import DataError
from training.photo_eval import load_test_photos
from training.study import figures
from training.study.experiments import NOISY, ScoreGrid
from training.study.findings import count, diff, worse_than_input
from training.study.markdown import CELL_NOTE, Figure, Section, Table, db, psnr, ssim
from training.study.scoring import GAUSSIAN, NOISE_NAMES, SALT_PEPPER, Noise, TestSet
from training.study.sections import Study, grid_table
from training.study.stats import signed

DOMAIN_NOISES = (Noise.of("gaussian", 0.1), GAUSSIAN, SALT_PEPPER)
# Every digit model the report ships or trains, by what it was trained on; the photo model when shipped.
DOMAIN_MODELS = {
    "mlp-gaussian (MNIST, Gaussian σ 0.3)": "mlp-gaussian",
    "conv-blind (MNIST, blind)": "conv-blind",
    "conv-blind-fashion (Fashion-MNIST, blind)": "conv-blind-fashion",
}
PHOTO_MODEL = "photo-blind"
CROP = 28
CROPS_PER_PHOTO = 16  # a 4×4 grid of crops over each photo
# Published BSD68 PSNR (dB) at σ 15 / 25 / 50: BM3D (Dabov et al. 2007) and DnCNN-B, one blind network (Zhang
# et al. 2017, table 2), as the papers' protocol reports them.
PUBLISHED_BSD68 = {"BM3D (published)": (31.07, 28.57, 25.62), "DnCNN-B (published)": (31.61, 29.16, 26.23)}
PHOTO_SIGMAS = (15, 25, 50)


def sklearn_digits() -> TestSet:
    """scikit-learn's 8×8 digits as MNIST-like 28×28 uint8 images (20×20 digit, 4-pixel border)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    frames = np.zeros((len(bunch.images), 28, 28), dtype=np.uint8)
    for i, digit in enumerate(bunch.images):
        small = Image.fromarray(np.round(digit * (255 / 16)).astype(np.uint8))
        frames[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.Resampling.BILINEAR))
    return TestSet("sklearn-digits", torch.from_numpy(frames), torch.from_numpy(bunch.target.astype(np.int64)))


def photo_crops(data_root: Path) -> TestSet:
    """28×28 crops of the test photos on a fixed 4×4 grid per photo; labels are the photo's index."""
    try:
        photos = load_test_photos("bsd68", data_root)
    except DataError:  # the test fixture ships Set12 crops only
        photos = load_test_photos("set12", data_root)
    crops, labels = [], []
    side = int(np.sqrt(CROPS_PER_PHOTO))
    for index, photo in enumerate(photos.images):
        height, width = photo.shape
        for top in np.linspace(0, height - CROP, side).astype(int):
            for left in np.linspace(0, width - CROP, side).astype(int):
                crops.append(photo[top : top + CROP, left : left + CROP])
                labels.append(index)
    return TestSet(f"{photos.name}-crops", torch.stack(crops), torch.tensor(labels))


def domain_grid(study: Study, domains: list[TestSet], models: dict[str, str]) -> ScoreGrid:
    """Rows: the noisy input, then each model; columns: (domain, noise)."""
    rows: dict[str, str | None] = {NOISY: None, **models}
    cells, cols = {}, []
    for test in domains:
        for noise in DOMAIN_NOISES:
            col = f"{DOMAIN_LABELS[test.dataset]}, {noise.label}"
            cols.append(col)
            for label, model in rows.items():
                cells[label, col] = study.scorer.score(model, test, noise)
    return ScoreGrid(list(rows), cols, cells)


DOMAIN_LABELS = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "sklearn-digits": "8×8 digits",
    "bsd68-crops": "BSD68 crops",
    "set12-crops": "Set12 crops",
}


def domain_findings(grid: ScoreGrid, models: dict[str, str], domains: list[str]) -> list[str]:
    """At the reference noise, what each domain's input scores and what each model makes of it; then, per model,
    where it beats its input and where it makes the input worse."""
    sentences = []
    for domain in domains:
        col = f"{domain}, {GAUSSIAN.label}"
        outputs = ", ".join(f"{short(label)} {db(grid[label, col].psnr)}" for label in models)
        sentences.append(f"{col}: the input scores {db(grid[NOISY, col].psnr)}; {outputs}.")
    for label in models:
        changes = {col: diff(grid[label, col], grid[NOISY, col]) for col in grid.cols}
        better = [col for col, change in changes.items() if change.above_zero]
        worse = sorted((col for col, change in changes.items() if change.below_zero), key=lambda c: changes[c].delta)
        tail = f"; the largest drop on {worse[0]} ({changes[worse[0]].render()})" if worse else ""
        sentences.append(
            f"{short(label)} is better than its input in {count(len(better), len(changes))} conditions and worse in "
            f"{len(worse)}{tail}."
        )
    sentences.append(worse_than_input(grid, list(models)))
    return sentences


def short(label: str) -> str:
    return label.split(" (")[0]


def domains_section(study: Study) -> Section:
    domains = [study.mnist, sklearn_digits().head(study.cfg.scale.test_limit), study.fashion,
               photo_crops(study.cfg.data_root).head(study.cfg.scale.test_limit)]  # fmt: skip
    models = dict(DOMAIN_MODELS)
    if study.scorer.seeds_of(PHOTO_MODEL):  # adopted by the zoo: shipped in the checkpoint folder
        models[f"{PHOTO_MODEL} (photos, blind)"] = PHOTO_MODEL
    grid = domain_grid(study, domains, models)
    shown = []
    for test in domains[1:]:
        noisy = test.noisy(GAUSSIAN)[: study.digits]
        shown += [(f"{DOMAIN_LABELS[test.dataset]}\nclean", test.clean[: study.digits]), ("noisy", noisy)]
        shown += [(f"{model}", study.scorer.denoise(model, noisy)) for model in models.values()]
    title = f"Out of domain, {GAUSSIAN.label}: clean, noisy, and each model's output"
    figures.image_grid(study.figure("domains.png"), title, shown)
    what = "; ".join(f"{DOMAIN_LABELS[t.dataset]}: {t.describe()}" for t in domains)
    table = grid_table(grid.transposed(), "condition", study.caption(study.mnist, f"{CELL_NOTE}; domains: {what}"))
    return Section(
        "domains",
        "Out of domain: other digits, clothes, photos",
        "What does each model do to images unlike those it was trained on: better than the input, or worse?",
        [table],
        [Figure("domains.png", title + " (seed 0 of each model, first noise seed).")],
        domain_findings(grid, models, [DOMAIN_LABELS[t.dataset] for t in domains]),
    )


def photo_card(study: Study) -> dict[str, Any] | None:
    """The photo model's card as the zoo verified it, with the evaluation and baselines ``dae-eval`` added to it;
    None when it is not shipped."""
    return study.card_of(PHOTO_MODEL).model_dump() if study.scorer.seeds_of(PHOTO_MODEL) else None


def photo_section(study: Study) -> Section:
    """The photo model's BSD68 and Set12 tables from its card, BM3D and the tuned filter beside it, and the papers."""
    title = f"Photos: {PHOTO_MODEL} against BM3D and the published figures"
    question = "How does the photo model compare with the classical state of the art and a published blind network?"
    card = photo_card(study)
    if card is None or not card.get("test_metrics"):
        missing = f"No `{PHOTO_MODEL}` checkpoint with an evaluation in {study.cfg.checkpoint_dir}."
        return Section("photos", title, question, findings=[missing])
    tables = []
    for dataset in ("bsd68", "set12"):
        rows = photo_rows(card, dataset)
        if rows:
            evaluation = card.get("evaluation", {}).get("photo_sets", {}).get(dataset, {})
            caption = (f"{dataset.upper()}, {evaluation.get('test_images', '?')} test images, noise seed "
                       f"{evaluation.get('noise_seed', '?')}; PSNR (dB) / SSIM; {evaluation.get('protocol', '')}. "
                       f"From the model card, written by `{evaluation.get('command', 'dae-eval')}`; published "
                       f"figures from the papers. Command: `{study.cfg.command}`.")  # fmt: skip
            header = ["method", *(condition_label(key) for key in rows[0][1])]
            tables.append(Table(header, [[name, *cells.values()] for name, cells in rows], caption, dataset.upper()))
    return Section("photos", title, question, tables, [], photo_findings(card))


def photo_findings(card: dict[str, Any]) -> list[str]:
    gaps = []
    for sigma, published in zip(PHOTO_SIGMAS, PUBLISHED_BSD68["BM3D (published)"], strict=True):
        key = f"gaussian@{sigma}/255"
        ours, bm3d = card["test_metrics"].get(f"bsd68:{key}"), photo_baseline(card, "bsd68", key, "BM3D")
        if ours and bm3d:
            gap = signed(ours["psnr_db"] - bm3d["psnr_db"])
            gaps.append(f"σ {sigma}: {db(ours['psnr_db'])} against BM3D's {db(bm3d['psnr_db'])} on the same noisy "
                        f"images ({gap} dB; BM3D published {db(published)})")  # fmt: skip
    if not gaps:
        return []
    dncnn = " / ".join(f"{v:.2f}" for v in PUBLISHED_BSD68["DnCNN-B (published)"])
    return [f"On BSD68 {PHOTO_MODEL} scores " + "; ".join(gaps) + f". DnCNN-B, one published blind network, "
            f"reports {dncnn} dB at σ 15 / 25 / 50."]  # fmt: skip


def condition_label(key: str) -> str:
    """A card's condition key as the report names it: ``gaussian@25/255`` → ``Gaussian σ 25/255``."""
    noise, level = key.split("@")
    return f"{NOISE_NAMES[noise]} {level}"


def photo_baseline(card: dict[str, Any], dataset: str, key: str, method: str) -> dict[str, Any] | None:
    found = card.get("baselines", {}).get(dataset, {}).get("results", {}).get(key, {}).get(method)
    return found if isinstance(found, dict) else None


def psnr_ssim(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "—"
    return f"{psnr(entry['psnr_db'])} / {ssim(entry['ssim'])}" if "ssim" in entry else psnr(entry["psnr_db"])


def photo_rows(card: dict[str, Any], dataset: str) -> list[tuple[str, dict[str, str]]]:
    """(method, {condition: "PSNR / SSIM"}) rows: the noisy input, the model, BM3D, the tuned filter, the papers."""
    prefix = f"{dataset}:"
    metrics = card["test_metrics"]
    keys = [key.removeprefix(prefix) for key in metrics if key.startswith(prefix)]
    if not keys:
        return []
    rows = [
        (NOISY, {k: psnr(metrics[prefix + k]["noisy_psnr_db"]) for k in keys}),
        (PHOTO_MODEL, {k: psnr_ssim(metrics[prefix + k]) for k in keys}),
        ("BM3D (σ given)", {k: psnr_ssim(photo_baseline(card, dataset, k, "BM3D")) for k in keys}),
        ("best tuned classical filter", {k: psnr_ssim(photo_baseline(card, dataset, k, "classical")) for k in keys}),
    ]
    if dataset == "bsd68":
        for name, published in PUBLISHED_BSD68.items():
            by_key = {f"gaussian@{s}/255": psnr(v) for s, v in zip(PHOTO_SIGMAS, published, strict=True)}
            rows.append((name, {k: by_key.get(k, "—") for k in keys}))
    return rows
