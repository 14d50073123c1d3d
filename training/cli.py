"""Command lines: ``dae-train``, ``dae-eval``, ``dae-report`` (also ``python -m training …``)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from models.architectures import check_model_arguments
from models.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    is_photo_dataset,
    load_checkpoint,
    read_card,
    write_card,
)
from models.corruptions import DEFAULT_LEVELS, NOISE_TYPES
from models.device import resolve_device
from training.config import TrainConfig
from training.data import DATASETS, DataError, load_split
from training.evaluate import EVAL_SEED, STANDARD_PANEL, evaluate, metric_key
from training.photo_eval import PHOTO_TEST_SETS, run_photo_eval
from training.train import train


def parse_arch_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value): the value read as JSON (ints, floats, lists, booleans), else kept a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


class _CollectArgs(argparse.Action):
    """Repeated ``--arch-arg KEY=VALUE`` into one dict (a fresh one: the default is never changed)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        key, value = values
        setattr(namespace, self.dest, {**getattr(namespace, self.dest), key: value})


def _option_type(annotation: Any) -> Any:
    """``int | None`` → ``int``; other annotations as they are."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
    return kinds[0] if typing.get_origin(annotation) in (types.UnionType, typing.Union) else annotation


def train_parser() -> argparse.ArgumentParser:
    """``dae-train``'s options, one per field of ``TrainConfig``, with its default, help and choices."""
    p = argparse.ArgumentParser(prog="dae-train", description="Train a denoising autoencoder.")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kind = _option_type(hints[f.name])
        options: dict[str, Any] = {"dest": f.name, "default": default, "help": meta.get("help")}
        if meta.get("required"):
            options["required"] = True
        elif default not in (None, {}) and not isinstance(default, bool):
            options["help"] += " (default: %(default)s)"
        if kind is bool:
            options["action"] = "store_true"
        elif typing.get_origin(kind) is dict:
            options.update(action=_CollectArgs, type=parse_arch_arg, metavar="KEY=VALUE")
        else:
            options["type"] = kind
        if "choices" in meta:
            choices = meta["choices"]
            options["choices"] = list(choices() if callable(choices) else choices)
        p.add_argument(meta.get("flag", "--" + f.name.replace("_", "-")), **options)
    return p


def train_config(argv: list[str]) -> TrainConfig:
    """The run ``dae-train argv`` asks for; bad options exit 2 with argparse's message."""
    p = train_parser()
    args = p.parse_args(argv)
    try:
        check_model_arguments(args.arch, args.arch_args)
    except ValueError as exc:
        p.error(f"--arch-arg: {exc}")
    return TrainConfig(**vars(args), command=shlex.join(["dae-train", *argv]))


def train_main(argv: list[str] | None = None) -> int:
    cfg = train_config(sys.argv[1:] if argv is None else argv)
    try:
        train(cfg)
    except (DataError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"dae-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dae-eval",
        description="Evaluate a checkpoint on the test split (MNIST-style sets) or on a photo test set, in the "
        "Gaussian-denoising papers' protocol (see training.photo_eval).",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--dataset",
        default=None,
        help=f"{', '.join(DATASETS)} (the test split of the IDX files), {', '.join(PHOTO_TEST_SETS)} (photos, under "
        "--data-root) or the path of a folder of test photos; default: the card's data set (MNIST-style cards)",
    )
    p.add_argument("--data-root", default="data")
    p.add_argument(
        "--noise",
        choices=NOISE_TYPES,
        default=None,
        help="default: the standard panel of five (photos: Gaussian σ 15, 25, 50 /255, salt_pepper 0.2, masking 0.3)",
    )
    p.add_argument("--level", type=float, default=None, help="photos: Gaussian σ as a fraction, e.g. 0.098 for 25/255")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="noise seed (fixed, so figures compare)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--write-card", action="store_true", help="record the figures in the model card")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="photos: also BM3D and the best classical filter (tuned on train400 under --data-root) on the same "
        "noisy images",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="photos: processes for --baselines")
    return p


def eval_main(argv: list[str] | None = None) -> int:
    p = eval_parser()
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
        model, card = load_checkpoint(args.checkpoint, device)
        dataset = args.dataset or card.dataset
        if is_photo_dataset(dataset):
            if args.dataset is None:
                raise DataError(
                    f"{card.name} was trained on photos ({card.dataset}): give --dataset "
                    f"{' or '.join(PHOTO_TEST_SETS)} (under --data-root) or a folder of test photos"
                )
            command = shlex.join(["dae-eval", *(sys.argv[1:] if argv is None else argv)])
            return run_photo_eval(args, model, card, device, command)
        if args.baselines:
            p.error("--baselines is for photo test sets (set12, bsd68 or a folder of photos)")
        images, _ = load_split(dataset, "test", args.data_root)
    except (CheckpointError, DataError, RuntimeError) as exc:
        print(f"dae-eval: error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        images = images[: args.limit]
    if args.noise is None:
        panel = list(STANDARD_PANEL)
    else:
        panel = [(args.noise, DEFAULT_LEVELS[args.noise] if args.level is None else args.level)]
    results = {metric_key(noise, level): evaluate(model, images, noise, level, args.seed) for noise, level in panel}
    summary = {
        "checkpoint": card.name, "dataset": dataset, "test_images": len(images), "seed": args.seed, "results": results
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{card.name} on {dataset} test ({len(images)} images, noise seed {args.seed})")
        print(f"{'noise':<18}{'noisy PSNR':>12}{'PSNR':>9}{'SSIM':>8}{'MSE':>10}")
        for key, r in results.items():
            print(f"{key:<18}{r['noisy_psnr_db']:>12.2f}{r['psnr_db']:>9.2f}{r['ssim']:>8.3f}{r['mse']:>10.5f}")
    if args.write_card:
        _, card_path = checkpoint_paths(args.checkpoint)
        card = read_card(card_path)
        card.test_metrics.update({k: {m: round(v, 5) for m, v in r.items()} for k, r in results.items()})
        extra = card.model_extra or {}
        evaluation = dict(extra.get("evaluation", {}))
        evaluation.update({
            "command": shlex.join(["dae-eval", *(sys.argv[1:] if argv is None else argv)]),
            "dataset": dataset, "split": "test", "test_images": len(images), "noise_seed": args.seed,
        })  # fmt: skip
        card.evaluation = evaluation  # type: ignore[attr-defined]  # an extra field of the card
        write_card(card, card_path)
    return 0


def report_main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    p = argparse.ArgumentParser(prog="dae-report", description="Re-run the study and write the report.")
    p.add_argument("--data-root", default="data", help="folder holding the MNIST and Fashion-MNIST IDX files")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default="docs/report.md", help="the report; figures go to figures/ beside it")
    p.add_argument("--cache", default="cache/study", help="where the models nobody ships are trained, once")
    p.add_argument("--checkpoint-dir", default="checkpoints", help="the shipped checkpoints")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for BM3D")
    p.add_argument("--quick", action="store_true", help="tiny models on the given data (the test fixture): a smoke run")
    p.add_argument("--train-seeds", type=int, help="training seeds per model (default 3, 1 with --quick)")
    p.add_argument("--noise-seeds", type=int, help="noise draws per test condition (default 3, 1 with --quick)")
    p.add_argument(
        "--train-only",
        nargs="+",
        default=(),
        metavar="MODEL",
        help="train just these study models (every seed) into the cache and write no report: a long first run in parts",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="SECTION",
        help="re-run just these sections (their anchor keys, e.g. domains photos) and put them in place in the "
        "existing report at --out",
    )
    args = p.parse_args(argv)
    if args.only and not Path(args.out).is_file():
        p.error(f"--only puts sections into an existing report, and {args.out} is not one: run without --only")
    for option in ("train_seeds", "noise_seeds"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            p.error(f"--{option.replace('_', '-')} must be 1 or more")
    from training.study.config import StudyConfig

    cfg = StudyConfig(
        data_root=Path(args.data_root), out=Path(args.out), cache=Path(args.cache),
        checkpoint_dir=Path(args.checkpoint_dir), device=args.device, quick=args.quick, workers=max(1, args.workers),
        train_seeds=args.train_seeds, noise_seeds=args.noise_seeds, train_only=tuple(args.train_only),
        only=tuple(args.only), command=shlex.join(["dae-report", *(sys.argv[1:] if argv is None else argv)]),
    )  # fmt: skip
    try:
        if cfg.train_only:
            from training.study.zoo import train_into_cache  # torch alone: no study extra needed to train

            train_into_cache(cfg)
        else:
            try:
                from training.report import run_report
            except ImportError as exc:
                print(f"dae-report: error: the report needs the study extra ({exc}): pip install -e '.[study]'",
                      file=sys.stderr)  # fmt: skip
                return 2
            run_report(cfg)
    except (CheckpointError, DataError, RuntimeError) as exc:
        print(f"dae-report: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "eval": eval_main, "report": report_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m training {train,eval,report} [options]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
