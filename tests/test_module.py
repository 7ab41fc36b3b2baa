"""The ClassifierModule's contract with compression callbacks: swap the network, add loss terms."""

import functools

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from litcompress.data import DigitsData
from litcompress.models import SmallCNN
from litcompress.module import ClassifierModule
from litcompress.optim import warmup_cosine


class SwapNetwork(Callback):
    """Replaces the network with a narrower one at the start of epoch 1, as pruning would."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != 1:
            return
        self.lr_before = trainer.optimizers[0].param_groups[0]["lr"]
        self.step_before = trainer.lr_scheduler_configs[0].scheduler.last_epoch
        self.net = SmallCNN(num_classes=10, in_channels=1, image_size=8, width=8)
        pl_module.replace_network(self.net)
        self.snapshot = {n: p.detach().clone() for n, p in self.net.named_parameters()}
        self.lr_after = trainer.optimizers[0].param_groups[0]["lr"]
        self.step_after = trainer.lr_scheduler_configs[0].scheduler.last_epoch


def make_module(**kwargs) -> ClassifierModule:
    return ClassifierModule(
        SmallCNN(num_classes=10, in_channels=1, image_size=8, width=16),
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        scheduler={"scheduler": warmup_cosine, "interval": "step"},
        **kwargs,
    )


def fit(module, callbacks, epochs=2, tmp_path=None):
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=5,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=DigitsData(batch_size=32))
    return trainer


def test_replaced_network_keeps_training_with_rebuilt_optimizer(tmp_path):
    swap = SwapNetwork()
    module = make_module()
    trainer = fit(module, [swap], tmp_path=tmp_path)

    assert module.net is swap.net
    optimizer_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimizer_params == {id(p) for p in swap.net.parameters()}
    for name, param in swap.net.named_parameters():
        assert not torch.equal(param, swap.snapshot[name]), f"{name} stopped updating"
    # The schedule carried on from where it was instead of restarting its warm-up.
    assert swap.step_after == swap.step_before == 5
    assert swap.lr_after == swap.lr_before
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 10


def test_loss_terms_are_added_and_logged(tmp_path):
    module = make_module()
    seen = []

    def penalty(inputs, logits, targets):
        seen.append(logits.shape)
        return 0.01 * logits.pow(2).mean()

    module.loss_terms["penalty"] = penalty
    module.ce_weight = 0.5
    trainer = fit(module, [], epochs=1, tmp_path=tmp_path)
    assert len(seen) == 5 and seen[0] == (32, 10)
    metrics = trainer.callback_metrics
    assert {"train/penalty", "train/ce_loss", "train/loss"} <= set(metrics)
    expected = 0.5 * metrics["train/ce_loss"] + metrics["train/penalty"]
    assert torch.isclose(metrics["train/loss_epoch"], expected, rtol=1e-4)


def test_norm_and_bias_are_excluded_from_weight_decay():
    module = make_module(no_decay_norm_and_bias=True)
    decayed, plain = module.parameter_groups()
    assert all(p.ndim > 1 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(module.net.parameters()))
