"""Transformer text classifiers from Hugging Face ``transformers``.

Every text network takes ``(input_ids, attention_mask)`` (``N x L`` int64 each) and returns
``N x num_classes`` logits. Its constructor is called with ``num_classes``, ``vocab_size`` (the
tokenizer's) and ``max_length`` (the longest input), supplied by the data module, plus the
options of its YAML: the contract of a user's own text network too.

* :class:`BertClassifier`: a BERT built from a config (``bert_tiny``, ``bert_mini``,
  ``bert_small``), trained from scratch;
* :func:`pretrained_classifier`: any local folder ``AutoModelForSequenceClassification`` loads (a
  BERT, DistilBERT, RoBERTa, MiniLM a user downloaded), with a new head for the data's classes.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from litcompress.errors import ConfigError


class SequenceClassifier(nn.Module):
    """A ``transformers`` sequence classifier as a plain network: ``(ids, mask) -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class BertClassifier(SequenceClassifier):
    """A BERT of ``layers`` x ``hidden`` (``heads`` attention heads, FFN ``ffn``) for
    ``num_classes``, with fresh weights, built offline from a ``BertConfig``."""

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        max_length: int,
        layers: int = 4,
        hidden: int = 256,
        heads: int = 4,
        ffn: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        from transformers import BertConfig, BertForSequenceClassification

        if hidden % heads:
            raise ConfigError(
                f"model.hidden={hidden} is not a multiple of model.heads={heads}: each head "
                f"takes hidden/heads dimensions (e.g. model.hidden={heads * 64})."
            )
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=max(max_length, 8),
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            num_labels=num_classes,
        )
        super().__init__(BertForSequenceClassification(config))


def pretrained_classifier(
    num_classes: int, vocab_size: int, max_length: int, path: str
) -> SequenceClassifier:
    """The model of a local pretrained folder with a new head for ``num_classes`` classes.

    Raises:
        ConfigError: the folder is missing, holds no model, its positions are fewer than
            ``max_length``, or its vocabulary is not the tokenizer's.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"model.path={path}: no such folder. Give a folder that save_pretrained wrote (its "
            f"config.json and weights), and its tokenizer with data.tokenizer=<the same folder>."
        )
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=num_classes, local_files_only=True, ignore_mismatched_sizes=True
        )
    except Exception as error:  # transformers raises OSError, ValueError, ...
        raise ConfigError(
            f"model.path={path} holds no model transformers can load ({type(error).__name__}: "
            f"{str(error).splitlines()[0]})."
        ) from None
    embeddings = model.get_input_embeddings().num_embeddings
    if embeddings != vocab_size:
        raise ConfigError(
            f"model.path={path} has a vocabulary of {embeddings} tokens, but the tokenizer has "
            f"{vocab_size}: use the model's own tokenizer (data.tokenizer={path})."
        )
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and positions < max_length:
        raise ConfigError(
            f"model.path={path} takes at most {positions} tokens, but data.max_length="
            f"{max_length}: set data.max_length={positions} or less."
        )
    return SequenceClassifier(model)
