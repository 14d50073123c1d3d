"""What the autoencoders learned: first-layer filters, a linear probe on the latent, latent correlation.

The probe is a logistic regression fitted on the 64-d latent of the clean *train* images and scored on
the test split, so it measures how linearly readable the digit class is from the code, never fitted on
test data. The DAE's probe is also scored on the latent of noisy test images: does the code survive noise?
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.architectures import MLPAutoencoder
from training.evaluate import to_float_batch
from training.study.scoring import CLEAN, GAUSSIAN, Noise, Score, Scorer, TestSet

FEATURE_MODELS = {"denoising AE (mlp-gaussian)": "mlp-gaussian", "standard AE (mlp-standard)": "mlp-standard"}
PROBE_NOISE = GAUSSIAN
SHOWN_FILTERS = 64


@dataclass
class FeatureRow:
    label: str
    probe_clean: float  # test accuracy of the probe on clean test latents
    probe_noisy: float  # ... on the latents of noisy test images (PROBE_NOISE)
    active_units: int  # latent units not stuck at zero on the clean test images
    mean_abs_corr: float  # mean |Pearson r| between distinct active units
    roughness: float  # mean squared neighbour difference of unit-norm first-layer filters
    dead_filters: int  # first-layer units that fire on no clean test image (weights left at initialisation)
    dead_shown: int  # ... of the SHOWN_FILTERS drawn in the figure
    clean: Score
    noisy: Score


@dataclass
class FeatureResult:
    rows: list[FeatureRow]
    filters: dict[str, np.ndarray]  # label → SHOWN_FILTERS×28×28
    correlations: dict[str, np.ndarray]  # label → 64×64 (NaN for dead units)
    probe_train_images: int
    first_layer_units: int


def as_mlp(model: nn.Module) -> MLPAutoencoder:
    if not isinstance(model, MLPAutoencoder):
        raise TypeError(f"feature study needs the MLP autoencoder, got {type(model).__name__}")
    return model


@torch.inference_mode()
def latents(model: MLPAutoencoder, images: torch.Tensor, batch_size: int = 2000) -> np.ndarray:
    device = next(model.parameters()).device
    chunks = [model.encode(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)]
    return torch.cat(chunks).numpy()


def first_layer_filters(model: MLPAutoencoder) -> np.ndarray:
    """Each first-layer unit's weights as a 28×28 image (units × 28 × 28)."""
    first = model.encoder[0]
    assert isinstance(first, nn.Linear)
    side = int(first.in_features**0.5)
    return first.weight.detach().float().cpu().numpy().reshape(-1, side, side)


@torch.inference_mode()
def dead_first_layer(model: MLPAutoencoder, images: torch.Tensor) -> np.ndarray:
    """Which first-layer units never fire (ReLU input ≤ 0) on any of ``images``. Such a unit gets no gradient,
    so its weights stay at their random initialisation: the speckled tiles of the filter figure."""
    first = model.encoder[0]
    assert isinstance(first, nn.Linear)
    device = first.weight.device
    fired = torch.zeros(first.out_features, dtype=torch.bool, device=device)
    for chunk in images.split(2000):
        fired |= (first(chunk.to(device).flatten(1)) > 0).any(dim=0)
    return (~fired).cpu().numpy()


def roughness(filters: np.ndarray) -> float:
    """Mean of ‖∂x w‖² + ‖∂y w‖² over unit-norm filters: ≈ 3.9 for white noise, far below for smooth strokes."""
    w = filters / np.linalg.norm(filters.reshape(len(filters), -1), axis=1)[:, None, None].clip(min=1e-12)
    dx, dy = np.diff(w, axis=2), np.diff(w, axis=1)
    return float(((dx**2).sum(axis=(1, 2)) + (dy**2).sum(axis=(1, 2))).mean())


def correlation(codes: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(64×64 correlation with NaN for dead units, active units, mean |r| between distinct active units)."""
    active = codes.std(axis=0) > 1e-6
    full = np.full((codes.shape[1], codes.shape[1]), np.nan)
    n = int(active.sum())
    if n < 2:
        return full, n, float("nan")
    r = np.corrcoef(codes[:, active], rowvar=False)
    full[np.ix_(active, active)] = r
    off_diagonal = r[~np.eye(n, dtype=bool)]
    return full, n, float(np.abs(off_diagonal).mean())


def fit_probe(train_codes: np.ndarray, train_labels: np.ndarray) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Standardised codes: ReLU units differ in scale by orders of magnitude, which stalls lbfgs.
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train_codes, train_labels)


def probe_accuracy(probe: object, codes: np.ndarray, labels: np.ndarray) -> float:
    return float((probe.predict(codes) == labels).mean())  # type: ignore[attr-defined]


def feature_study(
    scorer: Scorer, test: TestSet, train_images: torch.Tensor, train_labels: torch.Tensor, noise: Noise = PROBE_NOISE
) -> FeatureResult:
    rows, filters, correlations = [], {}, {}
    train_x, test_labels = to_float_batch(train_images), test.labels.numpy()
    for label, name in FEATURE_MODELS.items():
        model = as_mlp(scorer.model_of(name))
        probe = fit_probe(latents(model, train_x), train_labels.numpy())
        clean_codes = latents(model, test.clean)
        corr, active, mean_r = correlation(clean_codes)
        weights = first_layer_filters(model)
        dead = dead_first_layer(model, test.clean)
        rows.append(
            FeatureRow(
                label=label,
                probe_clean=probe_accuracy(probe, clean_codes, test_labels),
                probe_noisy=probe_accuracy(probe, latents(model, test.noisy(noise)), test_labels),
                active_units=active,
                mean_abs_corr=mean_r,
                roughness=roughness(weights),
                dead_filters=int(dead.sum()),
                dead_shown=int(dead[:SHOWN_FILTERS].sum()),
                clean=scorer.score(name, test, CLEAN),
                noisy=scorer.score(name, test, noise),
            )
        )
        filters[label], correlations[label] = weights[:SHOWN_FILTERS], corr
    return FeatureResult(rows, filters, correlations, len(train_images), len(weights))
