"""One description of a network's inputs (litcompress.spec.InputSpec): what it gives every part
that needs inputs, for images and for token ids with an attention mask, and that checkpoints and
artifacts carry it (older checkpoints, without it, still load)."""

from __future__ import annotations

import json

import torch
from torch import nn

from litcompress.checkpoint import CHECKPOINT_KEY, load_network, read_checkpoint
from litcompress.deploy.metadata import checkpoint_metadata
from litcompress.measure import count_macs, measure_latency_ms
from litcompress.spec import RECORD_KEY, InputSpec


def test_an_image_spec_gives_the_shape_examples_and_dynamic_batch():
    spec = InputSpec.image(3, 32)
    assert spec.shape == (3, 32, 32) and spec.names == ("images",)
    (images,) = spec.example(4)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert not spec.example(2, zeros=True)[0].any()
    (dims,) = spec.dynamic_shapes()
    assert list(dims) == [0]
    assert InputSpec.of((3, 32, 32)) == spec and InputSpec.of(spec) is spec
    assert InputSpec(**json.loads(json.dumps(spec.to_record()))) == spec
    assert InputSpec.image(1, (8, 12)).shape == (1, 8, 12)


class TinyTextNet(nn.Module):
    """Token ids and an attention mask in, logits out: a text network's calling convention."""

    def __init__(self, vocab_size: int = 100, dim: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled)


def test_a_token_spec_gives_ids_and_a_mask_and_measures_a_text_network():
    spec = InputSpec.tokens(vocab_size=100, max_length=64, length=16)
    assert spec.shape == (16,) and spec.names == ("input_ids", "attention_mask")
    ids, mask = spec.example(3)
    assert ids.shape == mask.shape == (3, 16) and ids.dtype == mask.dtype == torch.long
    assert int(ids.max()) < 100 and bool(mask.all())
    assert [list(d) for d in spec.dynamic_shapes()] == [[0, 1], [0, 1]]
    net = TinyTextNet()
    # The measuring code needs nothing but the spec: the same calls as for an image network.
    assert count_macs(net, spec) == 16 * 2  # the head: 16 inputs x 2 classes, once per example
    assert measure_latency_ms(net, spec, batch_size=2, min_run_time_s=0.01) > 0
    assert spec.describe() == "16 tokens"


def test_checkpoints_and_artifacts_carry_the_spec_and_older_checkpoints_still_load(
    trained_resnet8, tmp_path
):
    checkpoint = read_checkpoint(trained_resnet8)
    record = checkpoint[CHECKPOINT_KEY]
    assert InputSpec(**record[RECORD_KEY]) == InputSpec.image(1, 8)
    assert checkpoint_metadata(checkpoint, trained_resnet8)[RECORD_KEY] == record[RECORD_KEY]
    expected = load_network(trained_resnet8)(torch.ones(2, 1, 8, 8))

    del record[RECORD_KEY]  # as a checkpoint written before the spec was recorded
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    assert InputSpec.of_record(read_checkpoint(older)[CHECKPOINT_KEY]) == InputSpec.image(1, 8)
    assert torch.equal(load_network(older)(torch.ones(2, 1, 8, 8)), expected)
    assert (
        checkpoint_metadata(read_checkpoint(older), older)[RECORD_KEY]
        == InputSpec.image(1, 8).to_record()
    )
