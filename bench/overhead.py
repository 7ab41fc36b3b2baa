"""Training throughput of litcompress's Lightning loop against a plain PyTorch loop.

Both train the same network (same seed), on the same data loader, with the same optimizer,
scheduler, batch size and thread count, in this one process; rounds alternate between the two so
that machine noise hits both alike. Prints examples/s of each and the ratio (target: >= 0.95);
for text, the share of padding in the training batches.

    python bench/overhead.py                       # ResNet-20 on shapes, batch 128
    python bench/overhead.py model=cnn data=digits  # any train.py overrides
    python bench/overhead.py data=reviews data.limit=2560 model=bert_tiny   # a Transformer
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from litcompress.build import build, build_callbacks, build_module
from litcompress.measure import describe_cpu, describe_versions
from litcompress.resolvers import register as register_resolvers

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Without a data= override: ResNet-20 on 2,560 shapes images.
IMAGE_DEFAULTS = ["data=shapes", "data.num_train=2560", "model=resnet"]


class EpochTimer(Callback):
    """Wall time of each training epoch (the training loop only: no validation, no checkpoint)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def lightning_epochs(cfg, epochs: int) -> list[float]:
    L.seed_everything(cfg.seed, verbose=False)
    data = build(cfg.data)
    module = build_module(cfg, data)
    timer = EpochTimer()
    loggers = [build(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer = build(
        cfg.trainer,
        callbacks=[*build_callbacks(cfg, bool(loggers)), timer],
        logger=loggers or False,
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    return timer.seconds


def plain_epochs(cfg, epochs: int) -> list[float]:
    L.seed_everything(cfg.seed, verbose=False)
    data = build(cfg.data)
    module = build_module(cfg, data)  # only for the same network, optimizer and scheduler
    data.setup("fit")
    loader = data.train_dataloader()
    net = module.net.train()
    optimizer = module.optimizer_factory(module.parameter_groups())
    scheduler = None
    if module.scheduler_config:
        scheduler = module.scheduler_config["scheduler"](
            optimizer, total_steps=epochs * len(loader)
        )
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for *x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(*x), y)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first is warm-up)")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each loop, alternating")
    parser.add_argument("overrides", nargs="*", help="train.py overrides")
    args = parser.parse_args()
    register_resolvers()  # the configs' own interpolations (${scratch_or_finetune:...})
    defaults = [] if any(o.startswith("data=") for o in args.overrides) else IMAGE_DEFAULTS
    overrides = [*defaults, *args.overrides]

    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(str(CONF_DIR), version_base="1.3"),
    ):
        cfg = compose("train", overrides=[*overrides, "trainer.accelerator=cpu"])
        with open_dict(cfg):
            cfg.paths.output_dir = tmp
        data = build(cfg.data)
        data.setup("fit")
        num_images = len(data.train_set)
        plain, lightning = [], []
        for round_ in range(args.rounds):
            # Alternate which loop goes first; drop each run's first epoch (warm-up).
            order = [(plain, plain_epochs), (lightning, lightning_epochs)]
            for times, loop in order if round_ % 2 == 0 else order[::-1]:
                times += loop(cfg, args.epochs)[1:]

    plain_ips = num_images / statistics.median(plain)
    lightning_ips = num_images / statistics.median(lightning)
    print(describe_versions())
    print(f"config: {' '.join(overrides)} | {describe_cpu()}")
    spread = " ".join(f"{num_images / t:.0f}" for t in plain)
    if hasattr(data, "padding_share"):
        print(f"training batches   : {100 * data.padding_share():.1f}% of their tokens are padding")
    print(f"plain PyTorch loop : {plain_ips:8.1f} examples/s  (median; epochs: {spread})")
    spread = " ".join(f"{num_images / t:.0f}" for t in lightning)
    print(f"litcompress loop   : {lightning_ips:8.1f} examples/s  (median; epochs: {spread})")
    print(f"ratio              : {lightning_ips / plain_ips:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
