"""The reference tutorial's training loop, written out faithfully as the baseline for the benchmark.

torchvision's MNIST dataset with ``ToTensor``, a shuffling ``DataLoader`` of batch 128, the reference
MLP, Adam at 1e-3, MSE loss, Gaussian noise of σ 0.3 added per batch and clamped, 10 epochs. The
only additions are the command line (a seed, and optionally leaving dae-train's held-out slice out)
and saving the weights in the project's checkpoint format, so the benchmark can score both models
with the same evaluator.

    python bench/reference_loop.py --data-root DIR_WITH_MNIST_RAW --out /tmp/reference
"""

import argparse
import time

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms


class DenoisingAutoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(28 * 28, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, 256),
            nn.ReLU(),
            nn.Linear(256, 28 * 28),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)  # for measuring the seed-to-seed spread
    parser.add_argument("--exclude-holdout", action="store_true")  # train_benchmark --holdout
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    transform = transforms.ToTensor()
    train_data = datasets.MNIST(root=args.data_root, train=True, download=False, transform=transform)
    if args.exclude_holdout:  # leave out dae-train's fixed validation slice, to score both on it
        from training.data import holdout_split

        train_data = Subset(train_data, holdout_split(len(train_data))[0].tolist())
    train_loader = DataLoader(train_data, batch_size=128, shuffle=True)

    model = DenoisingAutoencoder()
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    noise_factor = 0.3

    start = time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        for images, _ in train_loader:
            images = images.view(images.size(0), -1)
            noisy = images + noise_factor * torch.randn_like(images)
            noisy = torch.clamp(noisy, 0.0, 1.0)
            outputs = model(noisy)
            loss = criterion(outputs, images)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"Epoch [{epoch + 1}/{args.epochs}], Loss: {total / len(train_loader):.4f}", flush=True)
    train_s = time.perf_counter() - start
    print(f"trained {len(train_data) * args.epochs} images in {train_s:.1f} s", flush=True)

    from models.checkpoint import save_checkpoint

    save_checkpoint(
        model, args.out, architecture="mlp", dataset="mnist", noise="gaussian", noise_level=noise_factor,
        input_size=[28, 28], epochs=args.epochs, seed=args.seed,
        training={"command": "bench/reference_loop.py", "loop_seconds": train_s},
    )  # fmt: skip


if __name__ == "__main__":
    main()
