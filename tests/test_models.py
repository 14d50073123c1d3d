"""Architectures (registry, shapes, ranges) and the metrics."""

from __future__ import annotations

import pytest
import torch

from models.architectures import create_model, list_models, model_arguments
from models.metrics import mse_per_image, psnr_per_image, ssim_per_image


def test_registry_builds_every_named_architecture() -> None:
    assert {"mlp", "conv"} <= set(list_models())
    with pytest.raises(KeyError, match="unknown architecture"):
        create_model("transformer")


def test_builder_arguments_are_the_one_source_of_defaults() -> None:
    assert model_arguments("conv") == {"channels": 24, "depth": 2}
    assert create_model("conv").hyperparameters == {"channels": 24, "depth": 2}
    with pytest.raises(ValueError, match="takes no argument 'width'; its arguments: channels, depth"):
        create_model("conv", width=8)


def test_reference_mlp_is_exactly_the_reference_widths() -> None:
    model = create_model("mlp")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 256), (256, 128), (128, 64), (64, 128), (128, 256), (256, 784)
    ]  # fmt: skip
    activations = [type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.Sigmoid))]
    assert activations == ["ReLU"] * 5 + ["Sigmoid"]
    x = torch.rand(3, 1, 28, 28)
    assert model.encode(x).shape == (3, 64)  # type: ignore[operator]
    out = model(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("size", [(28, 28), (13, 40), (64, 17), (1, 1)])
def test_conv_denoiser_takes_any_size(size: tuple[int, int]) -> None:
    model = create_model("conv", channels=8).eval()
    x = torch.rand(2, 1, *size)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (1, 40), (37, 53)])
@pytest.mark.parametrize("blocks", [0, 2])
def test_residual_unet_takes_any_size_and_starts_as_the_identity(size: tuple[int, int], blocks: int) -> None:
    model = create_model("unet-res", channels=4, blocks=blocks).eval()
    x = torch.rand(2, 1, *size)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == x.shape and torch.equal(out, x)  # the noise estimate starts at zero


def test_residual_unet_subtracts_its_noise_estimate_and_clamps_only_outside_training() -> None:
    model = create_model("unet-res")
    assert model.hyperparameters == {"channels": 32, "depth": 2} and model.input_size is None
    assert 400_000 <= sum(p.numel() for p in model.parameters()) <= 500_000
    torch.nn.init.constant_(model.head.bias, 0.25)  # a noise estimate of 0.25 everywhere
    x = torch.rand(1, 1, 16, 20)
    with torch.inference_mode():
        assert torch.allclose(model.train()(x), x - 0.25)
        assert torch.equal(model.eval()(x), (x - 0.25).clamp(0, 1))


def test_metrics_per_image() -> None:
    clean = torch.rand(4, 1, 28, 28)
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    mse = mse_per_image(noisy, clean)
    assert mse.shape == (4,)
    assert torch.allclose(psnr_per_image(noisy, clean), -10 * torch.log10(mse))
    assert psnr_per_image(clean, clean).max() == 100.0  # a perfect copy is capped, not infinite
    ssim = ssim_per_image(noisy, clean)
    assert ssim.shape == (4,) and torch.all(ssim < 1) and torch.allclose(ssim_per_image(clean, clean), torch.ones(4))


def test_ssim_is_scikit_images_over_the_whole_image_and_leaves_onednn_as_it_was(
    mnist_test_images: torch.Tensor,
) -> None:
    from skimage.metrics import structural_similarity

    clean = mnist_test_images[:8].unsqueeze(1).float() / 255
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ours = ssim_per_image(noisy, clean)
    # Wang et al.'s Gaussian-window SSIM map as scikit-image computes it, averaged over the whole image as
    # torchmetrics does (scikit-image's own mean leaves out a 5-pixel border: most of a 28×28 digit's background)
    maps = [
        structural_similarity(n[0].double().numpy(), c[0].double().numpy(), data_range=1.0, gaussian_weights=True,
                              sigma=1.5, use_sample_covariance=False, full=True)[1]
        for n, c in zip(noisy, clean, strict=True)
    ]  # fmt: skip
    reference = torch.tensor([m.mean() for m in maps], dtype=torch.float32)
    assert torch.allclose(ours, reference, atol=0.01), (ours, reference)  # the borders differ: reflect vs mirror
    assert torch.backends.mkldnn.enabled  # switched off for the call only
