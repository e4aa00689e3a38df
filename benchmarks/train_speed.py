"""Training speed of STSTNet: its public training script against fr-mer's ``ststnet``, side by side.

Both train the same network with the same recipe (Adam 5e-5, batch 256, the
public script's 800 epochs or fewer with ``--epochs``) on the real MEGC2019
composite inputs, fold by fold (leave one subject out), in one process, with
the same number of threads:

- ``public``: a faithful re-implementation of the training loop of STSTNet's
  ``main.py`` (github.com/christy1206/STSTNet): three convolution streams with
  their own batch norms, ``nn.Dropout``, a ``DataLoader`` over a
  ``TensorDataset`` (batch 256, no shuffling, samples grouped by class as its
  folder-by-folder reading leaves them), ``.item()`` loss and
  accuracy bookkeeping every step, and a pass over the held-out subject after
  every epoch;
- ``fr-mer``: ``fr_mer.training.train_model`` on ``create_model("ststnet")``
  with the device-resident dataset of ``fr_mer.data.load_dataset``, then one
  prediction of the held-out subject (what ``fr-mer evaluate`` does per fold).

The two are interleaved epoch by epoch (one public epoch runs in the
``on_epoch`` callback of each fr-mer epoch, and its time is subtracted from
fr-mer's) so that a shared, variably loaded machine affects both alike; the
ratio is the figure to read, absolute times depend on the load printed with
them. Wall-clock and process CPU time are both reported; with one thread the
CPU time is the work done, whatever the load. The timing of a fold starts at
model construction and ends with the held-out predictions (reading the public
script's PNG files is not counted; fr-mer's per-epoch callback costs one
scalar read per epoch).

``--ablation`` times one training step (batch 256) of intermediate versions,
from the public network to fr-mer's, to show what each change gives.

Run: ``python benchmarks/train_speed.py --folds 4 --epochs 100 --threads 1``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from fr_mer.data import load_dataset
from fr_mer.models import create_model, model_class
from fr_mer.protocols import subject_folds
from fr_mer.randomness import seeded_initialisation
from fr_mer.training import predict_proba, train_model

DEFAULT_CACHE = Path("/tmp/megc2019.h5")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_speed.json"
PUBLIC_EPOCHS = 800
PUBLIC_FOLDS = 68


# -- the public script ---------------------------------------------------------
class PublicSTSTNet(nn.Module):
    """STSTNet exactly as its ``main.py`` defines it."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels=3, kernel_size=3, padding=2)
        self.conv2 = nn.Conv2d(in_channels, out_channels=5, kernel_size=3, padding=2)
        self.conv3 = nn.Conv2d(in_channels, out_channels=8, kernel_size=3, padding=2)
        self.relu = nn.ReLU()
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(5)
        self.bn3 = nn.BatchNorm2d(8)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=3, padding=1)
        self.avgpool = nn.AvgPool2d(kernel_size=2, stride=2, padding=0)
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(in_features=5 * 5 * 16, out_features=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.dropout(self.maxpool(self.bn1(self.relu(self.conv1(x)))))
        x2 = self.dropout(self.maxpool(self.bn2(self.relu(self.conv2(x)))))
        x3 = self.dropout(self.maxpool(self.bn3(self.relu(self.conv3(x)))))
        x = torch.cat((x1, x2, x3), 1)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)


def _reset_weights(model: nn.Module) -> None:
    for layer in model.children():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()


class PublicTraining:
    """The per-subject body of the public ``main.py`` with ``--train True``, one epoch per call."""

    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, device: torch.device) -> None:
        learning_rate, batch_size = 0.00005, 256
        self.device = device
        self.loss_fn = nn.CrossEntropyLoss()
        self.model = PublicSTSTNet().to(device)
        self.model.apply(_reset_weights)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.train_dl = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size)
        self.test_dl = DataLoader(TensorDataset(x_test, y_test), batch_size=batch_size)
        self.train_loss = float("nan")
        self.test_correct = 0

    def epoch(self) -> None:
        model, loss_fn, optimizer, device = self.model, self.loss_fn, self.optimizer, self.device
        model.train()
        train_loss, num_train_correct, num_train_examples = 0.0, 0, 0
        for batch in self.train_dl:
            optimizer.zero_grad()
            x = batch[0].to(device)
            y = batch[1].to(device)
            yhat = model(x)
            loss = loss_fn(yhat, y)
            loss.backward()
            optimizer.step()
            train_loss += loss.data.item() * x.size(0)
            num_train_correct += (torch.max(yhat, 1)[1] == y).sum().item()
            num_train_examples += x.shape[0]
        self.train_loss = train_loss / len(self.train_dl.dataset)
        model.eval()
        val_loss, num_val_correct = 0.0, 0
        for batch in self.test_dl:
            x = batch[0].to(device)
            y = batch[1].to(device)
            yhat = model(x)
            loss = loss_fn(yhat, y)
            val_loss += loss.data.item() * x.size(0)
            num_val_correct += (torch.max(yhat, 1)[1] == y).sum().item()
        self.test_correct = num_val_correct


# -- fr-mer ------------------------------------------------------------------------
def frmer_fold(data, train_index: np.ndarray, test_index: np.ndarray, epochs: int, seed: int,
               on_epoch=None) -> dict:
    recipe = model_class("ststnet").recipe.replace(epochs=epochs)
    with seeded_initialisation(seed):
        model = create_model("ststnet")
    log = train_model(model, data, torch.as_tensor(train_index), recipe, seed=seed, on_epoch=on_epoch)
    predicted = predict_proba(model, data, torch.as_tensor(test_index)).argmax(1)
    truth = data.labels[torch.as_tensor(test_index, device=data.device)]
    return {"final_loss": log.final_loss, "test_correct": int((predicted == truth).sum())}


# -- measurement ----------------------------------------------------------------
def machine_info(threads: int) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def pick_folds(folds: list, count: int) -> list[tuple[int, object]]:
    """``count`` folds spread evenly over the protocol's fold order (all three databases)."""
    count = max(1, min(count, len(folds)))
    positions = np.unique(np.linspace(0, len(folds) - 1, count).round().astype(int))
    return [(int(i), folds[i]) for i in positions]


def run_speed(cache: Path, n_folds: int, epochs: int, seed: int) -> dict:
    device = torch.device("cpu")
    data = load_dataset(cache, model_class("ststnet").inputs, device)
    folds = subject_folds(data.databases, data.subjects)
    flow, labels = data.inputs["flow"], data.labels
    # The public script builds its tensors from OpenCV images: (N, H, W, C) permuted to (N, C, H, W).
    nhwc = flow.permute(0, 2, 3, 1).contiguous()
    rows = []
    chosen = pick_folds(folds, n_folds)
    # Warm-up, not timed: first calls pay one-off costs (oneDNN primitive creation, allocator growth).
    warm = chosen[0][1]
    warm_train, warm_test = torch.as_tensor(warm.train_index), torch.as_tensor(warm.test_index)
    PublicTraining(nhwc[warm_train].permute(0, 3, 1, 2), labels[warm_train], nhwc[warm_test].permute(0, 3, 1, 2),
                   labels[warm_test], device).epoch()
    frmer_fold(data, warm.train_index, warm.test_index, 1, seed)
    for index, fold in chosen:
        train_index, test_index = fold.train_index, fold.test_index
        # The public script reads its training images folder by folder (u_train/<class>/...),
        # so its unshuffled batches come grouped by class; keep that order for it.
        by_class = train_index[np.argsort(labels[torch.as_tensor(train_index)].numpy(), kind="stable")]
        x_train = nhwc[torch.as_tensor(by_class)].permute(0, 3, 1, 2)
        x_test = nhwc[torch.as_tensor(test_index)].permute(0, 3, 1, 2)
        y_train, y_test = labels[torch.as_tensor(by_class)], labels[torch.as_tensor(test_index)]
        row = {"fold": fold.subject, "fold_index": index, "n_train": int(len(train_index)),
               "n_test": int(len(test_index))}
        fold_seed = seed * 1000 + index
        public_time = [0.0, 0.0]  # wall, CPU

        def timed(call):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = call()
            public_time[0] += time.perf_counter() - start
            public_time[1] += time.process_time() - start_cpu
            return result

        torch.manual_seed(fold_seed)
        public = timed(lambda: PublicTraining(x_train, y_train, x_test, y_test, device))
        inside = public_time.copy()
        start, start_cpu = time.perf_counter(), time.process_time()
        # One public epoch after each of ours: a change of load hits both alike.
        ours = frmer_fold(data, train_index, test_index, epochs, fold_seed,
                          on_epoch=lambda epoch, loss: timed(public.epoch))
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        ours_wall = wall - (public_time[0] - inside[0])
        ours_cpu = cpu - (public_time[1] - inside[1])
        for which, seconds, cpu_seconds, result in (
                ("public", public_time[0], public_time[1],
                 {"final_loss": public.train_loss, "test_correct": public.test_correct}),
                ("fr-mer", ours_wall, ours_cpu, ours)):
            row[which] = {"seconds": seconds, "cpu_seconds": cpu_seconds,
                          "samples_per_second": len(train_index) * epochs / seconds, **result}
        row["ratio"] = row["public"]["seconds"] / row["fr-mer"]["seconds"]
        row["cpu_ratio"] = row["public"]["cpu_seconds"] / row["fr-mer"]["cpu_seconds"]
        rows.append(row)
        print(f"  {fold.subject}: public {row['public']['seconds']:.1f} s, fr-mer {row['fr-mer']['seconds']:.1f} s, "
              f"ratio {row['ratio']:.2f} (CPU time ratio {row['cpu_ratio']:.2f})", file=sys.stderr, flush=True)
    public_correct = sum(r["public"]["test_correct"] for r in rows)
    ours_correct = sum(r["fr-mer"]["test_correct"] for r in rows)
    n_test = sum(r["n_test"] for r in rows)
    public_total = sum(r["public"]["seconds"] for r in rows)
    ours_total = sum(r["fr-mer"]["seconds"] for r in rows)
    public_cpu = sum(r["public"]["cpu_seconds"] for r in rows)
    ours_cpu = sum(r["fr-mer"]["cpu_seconds"] for r in rows)
    scale = PUBLIC_EPOCHS / epochs * PUBLIC_FOLDS / len(rows)
    return {
        "epochs": epochs, "folds": rows, "public_seconds": public_total, "frmer_seconds": ours_total,
        "held_out_accuracy": {"public": public_correct / n_test, "fr-mer": ours_correct / n_test, "n": n_test},
        "ratio": public_total / ours_total, "public_cpu_seconds": public_cpu, "frmer_cpu_seconds": ours_cpu,
        "cpu_ratio": public_cpu / ours_cpu,
        "ratio_per_fold_min": min(r["ratio"] for r in rows), "ratio_per_fold_max": max(r["ratio"] for r in rows),
        "extrapolated_68_folds_800_epochs_minutes": {"public": public_total * scale / 60,
                                                     "fr-mer": ours_total * scale / 60},
    }


# -- ablation: one training step of intermediate versions --------------------------
class _Merged(nn.Module):
    """One 3->16 convolution and one 16-channel batch norm; nn layers, F.dropout."""

    def __init__(self, channels_last: bool = False, mask: str = "bernoulli") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=2)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(400, 3)
        self.channels_last, self.mask = channels_last, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(self.bn(F.relu(self.conv(x))), 3, 3, 1)
        x = _dropout(x, self.mask)
        return self.fc(F.avg_pool2d(x, 2).flatten(1))


def _dropout(x: torch.Tensor, mask: str) -> torch.Tensor:
    from fr_mer.ops import random_bits_mask

    if mask == "bernoulli":
        return F.dropout(x, 0.5, True)
    if mask == "bytes":  # one random byte per element
        return x * (torch.randint(0, 256, x.shape, dtype=torch.uint8) < 128) * 2.0
    return x * random_bits_mask(x.shape, 2.0, dtype=x.dtype)


class _Fused(nn.Module):
    """fr-mer's fused convolution-ReLU-BN-pool, with the average pool kept as a layer."""

    def __init__(self, chunk: int | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=2)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(400, 3)
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from fr_mer.ops import conv_relu_bn_maxpool, dropout

        x = conv_relu_bn_maxpool(x, self.conv.weight, self.conv.bias, self.bn.weight, self.bn.bias,
                                 self.bn.running_mean, self.bn.running_var, training=True,
                                 conv_padding=2, pool_kernel=3, pool_stride=3, pool_padding=1, chunk=self.chunk)
        x = dropout(x, 0.5)
        return self.fc(F.avg_pool2d(x, 2).flatten(1))


def run_ablation(cache: Path, repeats: int, steps: int) -> list[dict]:
    data = load_dataset(cache, model_class("ststnet").inputs, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(len(data), generator=generator)[:256]
    x, y = data.inputs["flow"][index], data.labels[index]
    ours = create_model("ststnet").train()
    variants = [
        ("public network (three streams, Bernoulli dropout)", PublicSTSTNet().train(), lambda m: m(x)),
        ("merged 3->16 convolution and batch norm", _Merged().train(), lambda m: m(x)),
        ("+ one random byte per dropout element", _Merged(mask="bytes").train(), lambda m: m(x)),
        ("+ channels-last memory", _Merged(True, "bytes").train(), lambda m: m(x)),
        ("+ 64 dropout bits per int64 draw", _Merged(True, "bits").train(), lambda m: m(x)),
        ("+ fused conv-ReLU-BN-pool, normalise after pooling", _Fused(len(x)).train(), lambda m: m(x)),
        ("+ in chunks of 64 samples (cache-sized passes)", _Fused(64).train(), lambda m: m(x)),
        ("+ average pool folded into the linear layer (fr-mer)", ours, lambda m: m({"flow": x})["logits"]),
    ]
    steppers = []
    for _, model, call in variants:
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)

        def step(model=model, call=call, optimizer=optimizer) -> None:
            loss = F.cross_entropy(call(model), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()
        steppers.append(step)
    times: list[list[float]] = [[] for _ in variants]
    cpu: list[list[float]] = [[] for _ in variants]
    for _ in range(repeats):
        for k, step in enumerate(steppers):
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            times[k].append((time.perf_counter() - start) / steps * 1e3)
            cpu[k].append((time.process_time() - start_cpu) / steps * 1e3)
    base, base_cpu = float(np.median(times[0])), float(np.median(cpu[0]))
    return [{"variant": name, "ms_per_step_median": float(np.median(t)), "ms_per_step_min": float(min(t)),
             "cpu_ms_per_step_median": float(np.median(c)), "speedup_vs_public": base / float(np.median(t)),
             "cpu_speedup_vs_public": base_cpu / float(np.median(c))}
            for (name, _, _), t, c in zip(variants, times, cpu)]


# -- report --------------------------------------------------------------------------
def markdown(report: dict) -> str:
    info, speed = report["machine"], report["speed"]
    lines = [
        "## STSTNet training speed: public script vs fr-mer",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), torch {info['torch']}, {info['threads']} thread(s)",
        f"- load average (1, 5, 15 min) at start {report['load_start']}, at end {report['load_end']}",
        f"- recipe: Adam 5e-5, batch 256, {speed['epochs']} epochs per fold (the public script runs {PUBLIC_EPOCHS})",
        "",
        "| fold | train samples | public s | fr-mer s | public samples/s | fr-mer samples/s | ratio |"
        " CPU-time ratio | public final loss | fr-mer final loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in speed["folds"]:
        pub, ours = row["public"], row["fr-mer"]
        lines.append(
            f"| {row['fold']} | {row['n_train']} | {pub['seconds']:.1f} | {ours['seconds']:.1f} | "
            f"{pub['samples_per_second']:.0f} | {ours['samples_per_second']:.0f} | {row['ratio']:.2f} | "
            f"{row['cpu_ratio']:.2f} | "
            f"{pub['final_loss']:.3f} | {ours['final_loss']:.3f} |")
    extra = speed["extrapolated_68_folds_800_epochs_minutes"]
    lines += [
        f"| **all** | | **{speed['public_seconds']:.1f}** | **{speed['frmer_seconds']:.1f}** | | | "
        f"**{speed['ratio']:.2f}** | **{speed['cpu_ratio']:.2f}** | | |",
        "",
        f"Ratio (public time / fr-mer time) over these folds: {speed['ratio']:.2f} "
        f"(per fold {speed['ratio_per_fold_min']:.2f} to {speed['ratio_per_fold_max']:.2f}); in process CPU "
        f"time {speed['cpu_ratio']:.2f} ({speed['public_cpu_seconds']:.1f} s against "
        f"{speed['frmer_cpu_seconds']:.1f} s). "
        f"Extrapolated to {PUBLIC_FOLDS} folds x {PUBLIC_EPOCHS} epochs under this load: public "
        f"{extra['public']:.0f} min, fr-mer {extra['fr-mer']:.0f} min.",
        "",
        f"Held-out accuracy after the last epoch (same network and recipe, different random streams): "
        f"public {speed['held_out_accuracy']['public']:.3f}, fr-mer {speed['held_out_accuracy']['fr-mer']:.3f} "
        f"over {speed['held_out_accuracy']['n']} samples.",
    ]
    if report.get("ablation"):
        lines += ["", "One training step (batch 256), medians of interleaved repeats:", "",
                  "| version | ms per step | CPU ms per step | speed-up vs public (wall, CPU) |", "|---|---|---|---|"]
        for row in report["ablation"]:
            lines.append(f"| {row['variant']} | {row['ms_per_step_median']:.1f} | "
                         f"{row['cpu_ms_per_step_median']:.1f} | "
                         f"{row['speedup_vs_public']:.2f}, {row['cpu_speedup_vs_public']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="fr-mer cache of the composite inputs (made by `fr-mer import-ststnet`).")
    parser.add_argument("--folds", type=int, default=4, help="Number of folds, spread over the 68 (default 4).")
    parser.add_argument("--epochs", type=int, default=100,
                        help=f"Epochs per fold (the public script's {PUBLIC_EPOCHS}; default 100).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (default 1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the fold seeds (default 0).")
    parser.add_argument("--ablation", action="store_true",
                        help="Also time one training step of each intermediate version.")
    parser.add_argument("--ablation-repeats", type=int, default=7, help="Interleaved rounds for --ablation.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON results.")
    args = parser.parse_args(argv)
    if not args.cache.is_file():
        print(f"skipped: {args.cache} not found. Make it with `fr-mer import-ststnet --images "
              "../shared/data/megc2019/ststnet_flow --labels ../shared/data/megc2019/combined_3class_gt.csv "
              f"--out {args.cache}` (the real composite inputs are needed for this benchmark).")
        return 0
    torch.set_num_threads(args.threads)
    report = {
        "command": " ".join(["python", "benchmarks/train_speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.threads),
        "load_start": load_average(),
    }
    if args.ablation:
        report["ablation"] = run_ablation(args.cache, args.ablation_repeats, steps=3)
    report["speed"] = run_speed(args.cache, args.folds, args.epochs, args.seed)
    report["load_end"] = load_average()
    text = markdown(report)
    report["markdown"] = text
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
