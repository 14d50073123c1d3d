"""``dae-eval --baselines`` on photos: BM3D and the best tuned classical filter, on the model's noisy images.

Everything is tuned on a few ``train400`` images (``TUNING_IMAGES``, evenly spread over the set, with their
own noise seed ``classical.TUNING_SEED``), never on the test set; the test images are only ever denoised
with the chosen setting.

- BM3D (the ``bm3d`` package) is given the noise σ: σ/255 itself for Gaussian noise; for salt & pepper and
  masking, which it was not made for, the standard deviation of (noisy − clean) over the tuning images.
- The classical filters of the study (``training.study.classical``: median, Gaussian blur, total
  variation, non-local means) each have their setting picked from the study's grid by mean PSNR on the
  tuning images, per noise; the filter with the best tuned train400 PSNR is the one run on the test set,
  and reported with its setting (non-local means gets the same σ as BM3D; its ``h`` is a multiple of it).

Outputs are clipped to [0, 1] like the model's. Denoising runs in ``--workers`` spawned processes, each
single-threaded (BM3D takes seconds per image); seconds per image are measured in the worker, one core.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch

from models.metrics import psnr_per_image
from training.data import DataError
from training.photo_eval import Log, TestPhotos, mean_of, noisy_photo, photo_key, scores
from training.photos import image_files, photo_folder, read_gray
from training.study.classical import GRIDS, METHODS, TUNING_SEED

TUNING_IMAGES = 6
FILTERS = ("median", "Gaussian blur", "total variation", "non-local means")  # the study's, less BM3D
PROGRESS_EVERY_S = 15.0


@dataclass(frozen=True)
class Job:
    """One denoiser with one setting on one or more H×W images (float64, noisy, not clipped)."""

    method: str
    params: dict[str, float]
    sigma: float
    images: tuple[np.ndarray, ...]


def denoise_job(job: Job) -> tuple[list[np.ndarray], float]:
    """(outputs clipped to [0, 1], seconds per image): run in a worker process, or in this one."""
    started = time.perf_counter()
    # N=1 batches: the study's denoisers take N×H×W, and photos differ in size.
    outputs = [np.clip(METHODS[job.method](im[None], job.sigma, 1, **job.params)[0], 0.0, 1.0) for im in job.images]
    return outputs, (time.perf_counter() - started) / len(job.images)


@dataclass
class Runner:
    """Runs jobs in a pool of spawned processes (``workers`` > 1) or in this process, with progress lines."""

    workers: int
    log: Log
    pool: ProcessPoolExecutor | None = field(default=None, init=False)

    def __enter__(self) -> Runner:
        if self.workers > 1:
            # spawn, not fork: this process holds torch's thread pools, which a forked child can deadlock on.
            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(self, jobs: list[Job], what: str) -> list[tuple[list[np.ndarray], float]]:
        """Every job's result, in the jobs' order; a progress line every ``PROGRESS_EVERY_S`` and at the end."""
        results: list[tuple[list[np.ndarray], float] | None] = [None] * len(jobs)
        started = last = time.perf_counter()
        for done, (index, result) in enumerate(self._results(jobs), 1):
            results[index] = result
            now = time.perf_counter()
            if now - last >= PROGRESS_EVERY_S or done == len(jobs):
                left = (now - started) / done * (len(jobs) - done)
                self.log(
                    f"  {what}: {done}/{len(jobs)} done, {now - started:.0f} s"
                    + (f", ~{left:.0f} s left" if done < len(jobs) else "")
                )
                last = now
        return [r for r in results if r is not None]

    def _results(self, jobs: list[Job]) -> Iterator[tuple[int, tuple[list[np.ndarray], float]]]:
        if self.pool is None:
            yield from ((index, denoise_job(job)) for index, job in enumerate(jobs))
            return
        futures: dict[Future[tuple[list[np.ndarray], float]], int] = {
            self.pool.submit(denoise_job, job): index for index, job in enumerate(jobs)
        }
        for future in as_completed(futures):
            yield futures[future], future.result()


def to_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).float()[None, None]


def to_array(batch: torch.Tensor) -> np.ndarray:
    return batch[0, 0].double().numpy()


def tuning_set(data_root: str, count: int = TUNING_IMAGES) -> tuple[list[str], list[torch.Tensor]]:
    """(names, H×W uint8 images) of ``count`` train400 images spread evenly over the set (file-name order)."""
    files = image_files(photo_folder("train400", data_root))
    if not files:
        raise DataError(f"no train400 images under {data_root} to tune the baselines on")
    picked = files[:: max(1, len(files) // count)][:count]
    return [path.name for path in picked], [read_gray(path) for path in picked]


@dataclass
class Tuning:
    """The noisy tuning images of one noise, and the σ BM3D and non-local means are given for it."""

    clean: list[torch.Tensor]  # 1×1×H×W float each
    noisy: list[np.ndarray]
    sigma: float
    sigma_source: str

    @classmethod
    def of(cls, images: list[torch.Tensor], noise: str, level: float) -> Tuning:
        pairs = [noisy_photo(image, noise, level, TUNING_SEED, index) for index, image in enumerate(images)]
        clean = [c for c, _ in pairs]
        if noise == "gaussian":
            sigma, source = level, "true σ"
        else:
            residual = torch.cat([(n - c).flatten() for c, n in pairs])
            sigma, source = residual.double().std().item(), f"std of noisy − clean on {len(images)} train400 images"
        return cls(clean, [to_array(n) for _, n in pairs], sigma, source)


def describe(method: str, params: dict[str, float]) -> str:
    shown = ", ".join(f"{k} {v:g}" for k, v in params.items())
    return f"{method} ({shown})" if shown else method


def tune_filters(tuning: Tuning, runner: Runner, what: str) -> dict[str, dict[str, Any]]:
    """Each filter's best grid setting by mean PSNR on the tuning images: method → {params, train_psnr_db}."""
    settings = [(method, params) for method in FILTERS for params in GRIDS[method]]
    jobs = [Job(method, params, tuning.sigma, tuple(tuning.noisy)) for method, params in settings]
    best: dict[str, dict[str, Any]] = {}
    for (method, params), (outputs, _) in zip(settings, runner.run(jobs, what), strict=True):
        psnr = float(
            np.mean([psnr_per_image(to_batch(o), c).item() for o, c in zip(outputs, tuning.clean, strict=True)])
        )
        if method not in best or psnr > best[method]["train_psnr_db"]:
            best[method] = {"params": params, "train_psnr_db": psnr}
    return best


def run_baselines(
    photos: TestPhotos, panel: Iterable[tuple[str, float]], seed: int, data_root: str, workers: int, log: Log
) -> dict[str, Any]:
    """BM3D and the best tuned classical filter under each noise of ``panel``, on the same noisy test images."""
    names, tuning_images = tuning_set(data_root)
    n = len(photos.images)
    results: dict[str, Any] = {}
    with Runner(workers, log) as runner:
        for noise, level in panel:
            key = photo_key(noise, level)
            tuning = Tuning.of(tuning_images, noise, level)
            log(f"baselines, {key}: tuning {len(FILTERS)} classical filters on {len(names)} train400 images")
            candidates = tune_filters(tuning, runner, "tuning")
            method = max(candidates, key=lambda m: candidates[m]["train_psnr_db"])
            chosen = candidates[method]
            pairs = [noisy_photo(image, noise, level, seed, index) for index, image in enumerate(photos.images)]
            noisy = [to_array(noisy_image) for _, noisy_image in pairs]
            # BM3D first: the long jobs start early and the short ones fill in at the end.
            jobs = [Job("BM3D", {}, tuning.sigma, (im,)) for im in noisy]
            jobs += [Job(method, chosen["params"], tuning.sigma, (im,)) for im in noisy]
            log(f"baselines, {key}: BM3D and {describe(method, chosen['params'])} on {n} test images, "
                f"{workers} worker{'s' if workers > 1 else ''}")  # fmt: skip
            done = runner.run(jobs, "denoising")
            rows: dict[str, list[dict[str, float]]] = {"BM3D": [], "classical": []}
            for index, (outputs, seconds) in enumerate(done):
                row = scores(to_batch(outputs[0]), pairs[index % n][0])
                rows["BM3D" if index < n else "classical"].append({**row, "seconds_per_image": seconds})
            results[key] = {
                "BM3D": {**mean_of(rows["BM3D"]), "sigma": tuning.sigma, "sigma_source": tuning.sigma_source},
                "classical": {
                    **mean_of(rows["classical"]), "method": method, "params": chosen["params"],
                    "label": describe(method, chosen["params"]), "train_psnr_db": chosen["train_psnr_db"],
                    "sigma": tuning.sigma, "candidates": candidates,
                },
            }  # fmt: skip
    return {"tuning_images": names, "tuning_seed": TUNING_SEED, "results": results}
