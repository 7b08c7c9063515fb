"""Train builtin:shapes-cnn on builtin:shapes (fixed seed, CPU, a few minutes), then measure it.

    python -m interpgram.backends.models.train_shapes_cnn --out backends/models/weights

Writes ``shapes_cnn.safetensors`` and ``shapes_cnn.json`` (configuration, accuracy on freshly
generated test images, the planted shortcut's measured strength, wall time). Both files are
written to temporary names first and moved into place, so an interrupted run leaves the old ones.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

from interpgram.backends.data import shapes as S
from interpgram.backends.files import atomic_write, atomic_write_text
from interpgram.backends.models.shapes_cnn import ShapesCNN, load_shapes_cnn, normalize


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalize(images[i:i + batch])).argmax(1) for i in range(0, len(images), batch)])


@torch.no_grad()
def evaluate(model: nn.Module, *, n: int = 2000, seed: int = 1) -> dict:
    """Clean accuracy and the shortcut's strength on freshly generated test-split images."""
    clean = S.generate(range(n), split="test", seed=seed, shortcut_prevalence=0.0)
    pred = predict(model, clean.images)
    acc = (pred == clean.labels).float().mean().item()
    star = S.CLASSES.index(S.SHORTCUT_CLASS)
    is_star = clean.labels == star
    star_acc = (pred[is_star] == star).float().mean().item()
    others = ~is_star
    imgs, masks = clean.images[others], clean.masks[others]
    g = torch.Generator().manual_seed(seed)
    stitched, _ = S.paste_patch(imgs, masks=masks, kind="stitch", generator=g)
    g = torch.Generator().manual_seed(seed)
    noised, _ = S.paste_patch(imgs, masks=masks, kind="noise", generator=g)
    flip = lambda x: (predict(model, x) == star).float().mean().item()  # noqa: E731
    return {
        "accuracy": round(acc, 4), "n_eval": n, "eval_split": "test", "eval_seed": seed, "eval_shortcut_prevalence": 0.0,
        "star_accuracy_without_patch": round(star_acc, 4),
        "flip_to_star_with_stitch_patch": round(flip(stitched), 4),
        "flip_to_star_with_noise_patch": round(flip(noised), 4),
        "flip_to_star_with_nothing_pasted": round(flip(imgs), 4),
        "n_non_star": int(others.sum()),
    }


def train(*, n_train: int, epochs: int, batch: int, lr: float, seed: int, log=print) -> ShapesCNN:
    torch.manual_seed(seed)
    model = ShapesCNN()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * (n_train // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        # a fresh stream of training images every epoch: the data set is infinite
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + epoch)) + epoch * n_train
        model.train()
        seen = correct = 0
        total = 0.0
        for i in range(0, n_train - batch + 1, batch):
            b = S.generate(perm[i:i + batch].tolist(), split="train", seed=seed)
            out = model(normalize(b.images))
            loss = loss_fn(out, b.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b.labels)
            correct += (out.argmax(1) == b.labels).sum().item()
            seen += len(b.labels)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / seen:.3f}, train acc {correct / seen:.3f}, "
            f"{seen / (time.perf_counter() - t0) * (epoch + 1):.0f} img/s overall, {time.perf_counter() - t0:.0f} s")
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    ap.add_argument("--n-train", type=int, default=24_000, help="training images per epoch (a new stream each epoch)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.08)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true", help="measure the committed weights, print, write nothing")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.eval_only:
        print(json.dumps(evaluate(load_shapes_cnn(args.out / "shapes_cnn.safetensors")), indent=2))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = train(n_train=args.n_train, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed)
    train_s = time.perf_counter() - t0
    metrics = evaluate(model)
    meta = {
        "model": "builtin:shapes-cnn", "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"images_per_epoch": args.n_train, "epochs": args.epochs, "batch": args.batch,
                     "optimizer": "SGD nesterov momentum 0.9, weight decay 5e-4", "schedule": f"OneCycle to {args.lr}",
                     "seed": args.seed, "shortcut_prevalence": S.SHORTCUT_PREVALENCE, "wall_seconds": round(train_s, 1),
                     "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} cpus"},
        **metrics,
        "command": "python -m interpgram.backends.models.train_shapes_cnn --out backends/models/weights",
    }

    atomic_write(args.out / "shapes_cnn.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()}))
    atomic_write_text(args.out / "shapes_cnn.json", json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
