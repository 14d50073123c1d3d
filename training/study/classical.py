"""Classical denoisers on the same noisy test images as the autoencoders.

Median, Gaussian blur, total variation and non-local means (scikit-image), BM3D (the ``bm3d``
package). Their parameters (the median's window size among them) are chosen by a small grid search on
noisy *train* images (their own noise seed); the test images are only ever denoised with the chosen
setting. BM3D is given the noise σ: the true σ for Gaussian noise, and for salt-and-pepper and masking,
which it was not made for, the RMS of the noise measured on the tuning images. A second BM3D row is always
given that measured RMS, the *effective* σ: clipping to [0, 1] leaves Gaussian noise of σ 0.3 at about
0.22 RMS on a digit. BM3D costs a few tenths of a second per 28×28 image, so it runs in a pool of worker
processes (``bm3d_worker``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context

import numpy as np
import torch

from training.evaluate import EVAL_SEED
from training.study.bm3d_worker import bm3d_chunk
from training.study.experiments import NOISY, SPECIALISTS, ScoreGrid
from training.study.log import LogFn
from training.study.scoring import REFERENCE_NOISES, Noise, Score, Scorer, TestSet

Params = dict[str, float]
MIN_IMAGES_PER_WORKER = 25
TUNING_SEED = EVAL_SEED + 7  # train-image noise for tuning is drawn apart from the test noise


def median(images: np.ndarray, sigma: float, workers: int, size: float = 3) -> np.ndarray:
    from scipy import ndimage

    window = int(size)
    return np.asarray(ndimage.median_filter(images, size=(1, window, window), mode="reflect"))


def gaussian_blur(images: np.ndarray, sigma: float, workers: int, blur: float = 1.0) -> np.ndarray:
    from scipy import ndimage

    return np.asarray(ndimage.gaussian_filter(images, sigma=(0, blur, blur), mode="reflect"))


def per_image(images: np.ndarray, denoise_one: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    # The scikit-image filters treat a 3-d array as a volume, so each image is denoised on its own.
    return np.stack([denoise_one(image) for image in images])


def total_variation(images: np.ndarray, sigma: float, workers: int, weight: float = 0.1) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return per_image(images, lambda im: denoise_tv_chambolle(im, weight=weight))


def non_local_means(
    images: np.ndarray, sigma: float, workers: int, h: float = 0.8, patch_size: float = 5
) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    def one(im: np.ndarray) -> np.ndarray:
        size = int(patch_size)
        # h is tuned as a multiple of σ, so one grid fits every noise level
        return denoise_nl_means(im, h=h * sigma, sigma=sigma, patch_size=size, patch_distance=5, fast_mode=True)

    return per_image(images, one)


def bm3d_processes(images: int, workers: int) -> int:
    """How many processes BM3D runs in: starting a worker costs a second or two, worth it only for many images."""
    return workers if workers > 1 and images >= MIN_IMAGES_PER_WORKER * workers else 1


def bm3d_denoise(images: np.ndarray, sigma: float, workers: int) -> np.ndarray:
    if bm3d_processes(len(images), workers) == 1:
        return bm3d_chunk((images, sigma))
    chunks = [(chunk, sigma) for chunk in np.array_split(images, workers * 4)]
    # spawn, not fork: the parent holds torch's thread pools, which a forked child can deadlock on.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(bm3d_chunk, chunks)))


Denoiser = Callable[..., np.ndarray]
EFFECTIVE_BM3D = "BM3D (effective σ)"
METHODS: dict[str, Denoiser] = {
    "median": median,
    "Gaussian blur": gaussian_blur,
    "total variation": total_variation,
    "non-local means": non_local_means,
    "BM3D": bm3d_denoise,
    EFFECTIVE_BM3D: bm3d_denoise,
}
# Small grids: each setting is tried on the tuning images; BM3D's one knob, σ, is given, not tuned.
GRIDS: dict[str, list[Params]] = {
    "median": [{"size": s} for s in (3, 5, 7)],
    "Gaussian blur": [{"blur": b} for b in (0.5, 0.7, 1.0, 1.4, 2.0)],
    "total variation": [{"weight": w} for w in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8)],
    "non-local means": [{"h": h, "patch_size": p} for h in (0.15, 0.25, 0.4, 0.6, 0.8, 1.0) for p in (3, 5)],
    "BM3D": [{}],
    EFFECTIVE_BM3D: [{}],
}


def to_numpy(batch: torch.Tensor) -> np.ndarray:
    return batch[:, 0].double().numpy()


def to_torch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.clip(images, 0.0, 1.0)).float().unsqueeze(1)


def noise_sigma(noise: Noise, clean: np.ndarray, noisy: np.ndarray, effective: bool = False) -> tuple[float, str]:
    """σ handed to NLM and BM3D: the true σ for Gaussian noise (unless ``effective``), else the noise RMS on the
    tuning images."""
    if noise.kind == "gaussian" and not effective:
        return noise.steps[0][1], "true σ"
    return float(np.sqrt(((noisy - clean) ** 2).mean())), "noise RMS on the tuning images"


@dataclass
class Tuned:
    method: str
    params: Params
    sigma: float
    sigma_source: str
    train_psnr: float | None  # mean PSNR of the chosen setting on the tuning images (None: nothing tuned)

    def describe(self) -> str:
        shown = [f"{k} {v:g}" for k, v in self.params.items()]
        if self.method in ("non-local means", "BM3D", EFFECTIVE_BM3D):
            shown.append(f"σ {self.sigma:.3f} ({self.sigma_source})")
        text = ", ".join(shown) or "no parameters"
        return text if self.train_psnr is None else f"{text}; {self.train_psnr:.2f} dB on train"


def tune(method: str, noise: Noise, clean: torch.Tensor, workers: int) -> Tuned:
    """Pick the grid setting with the best mean PSNR on noisy train images."""
    noisy = noise.apply(clean, TUNING_SEED)
    sigma, source = noise_sigma(noise, to_numpy(clean), to_numpy(noisy), effective=method == EFFECTIVE_BM3D)
    grid = GRIDS[method]
    if len(grid) == 1:
        return Tuned(method, grid[0], sigma, source, None)
    results = [(Score.of(run(method, noisy, sigma, workers, p), clean).psnr, p) for p in grid]
    best_psnr, best = max(results, key=lambda r: r[0])
    return Tuned(method, best, sigma, source, best_psnr)


def run(method: str, noisy: torch.Tensor, sigma: float, workers: int, params: Params) -> torch.Tensor:
    return to_torch(METHODS[method](to_numpy(noisy), sigma, workers, **params))


@dataclass
class Timed:
    output: torch.Tensor
    seconds_per_image: float


def timed(fn: Callable[[], torch.Tensor], images: int) -> Timed:
    started = time.perf_counter()
    output = fn()
    return Timed(output, (time.perf_counter() - started) / max(images, 1))


def denoise_classical(tuned: Iterable[Tuned], noisy: torch.Tensor, workers: int) -> dict[str, Timed]:
    """Every classical method with its tuned setting on the noisy images; a setting that repeats another's
    (BM3D given the effective σ where that is the σ it gets anyway) reuses its output."""
    out: dict[str, Timed] = {}
    done: dict[tuple[Denoiser, float, tuple[tuple[str, float], ...]], Timed] = {}
    for t in tuned:
        setting = (METHODS[t.method], t.sigma, tuple(sorted(t.params.items())))
        if setting not in done:
            done[setting] = timed(partial(run, t.method, noisy, t.sigma, workers, t.params), len(noisy))
        out[t.method] = done[setting]
    return out


# (condition, test images) → the tuned settings and the classical outputs: two sections share conditions.
ClassicalRuns = dict[tuple[Noise, str], tuple[list[Tuned], dict[str, Timed]]]


@dataclass
class ClassicalResult:
    grid: ScoreGrid  # rows: noisy input, the methods, the models; columns: the reference noises
    seconds_per_image: dict[str, float]  # row → mean over the noises
    tuned: dict[tuple[str, str], Tuned]  # (method, noise label) → chosen setting
    examples: dict[str, dict[str, torch.Tensor]]  # noise label → row → the first test image's output
    tuning_images: int


ModelPicks = Mapping[str, Callable[[Noise], str]]  # row → the model it runs on a condition
MODEL_PICKS: ModelPicks = {
    "MLP specialist (trained on that noise)": lambda noise: SPECIALISTS[noise.kind],
    "mlp-mixed": lambda _: "mlp-mixed",
    "conv-blind": lambda _: "conv-blind",
}
MODEL_ROWS = tuple(MODEL_PICKS)


def model_denoisers(
    scorer: Scorer, noise: Noise, picks: ModelPicks = MODEL_PICKS
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    # With the condition: a level-aware model is told its level.
    return {row: partial(scorer.denoise, pick(noise), noise=noise) for row, pick in picks.items()}


def classical_study(
    scorer: Scorer,
    sample: TestSet,
    tuning_clean: torch.Tensor,
    workers: int,
    log: LogFn,
    noises: Sequence[Noise] = REFERENCE_NOISES,
    picks: ModelPicks = MODEL_PICKS,
    runs: ClassicalRuns | None = None,
) -> ClassicalResult:
    """Every classical method tuned per condition on train images, then it and the picked models on ``sample``;
    ``runs`` keeps the classical part for a later call on the same condition and images."""
    runs = {} if runs is None else runs
    rows = [NOISY, *METHODS, *picks]
    cells: dict[tuple[str, str], Score] = {}
    seconds: dict[str, list[float]] = {row: [] for row in rows}
    tuned: dict[tuple[str, str], Tuned] = {}
    examples: dict[str, dict[str, torch.Tensor]] = {}
    for noise in noises:
        noisy = sample.noisy(noise)
        key = (noise, sample.describe())
        if key not in runs:
            log(f"classical denoisers: tuning on {len(tuning_clean)} train images, {noise.label}")
            chosen = [tune(method, noise, tuning_clean, workers) for method in METHODS]
            log(f"classical denoisers: denoising {len(sample)} test images, {noise.label}")
            runs[key] = (chosen, denoise_classical(chosen, noisy, workers))
        chosen, classical_outputs = runs[key]
        tuned.update({(t.method, noise.label): t for t in chosen})
        models = {row: timed(partial(denoise, noisy), len(noisy)) for row, denoise in
                  model_denoisers(scorer, noise, picks).items()}  # fmt: skip
        outputs = {NOISY: Timed(noisy, 0.0), **classical_outputs, **models}
        for row, result in outputs.items():
            cells[row, noise.label] = Score.of(result.output, sample.clean)
            seconds[row].append(result.seconds_per_image)
        examples[noise.label] = {row: result.output[:1] for row, result in outputs.items()}
    grid = ScoreGrid(rows, [n.label for n in noises], cells)
    mean_seconds = {row: float(np.mean(s)) for row, s in seconds.items()}
    return ClassicalResult(grid, mean_seconds, tuned, examples, len(tuning_clean))
