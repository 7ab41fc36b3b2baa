"""Tokenizers for text data: a pretrained one from a local folder, or a subword tokenizer
trained on the training split in seconds (Hugging Face ``tokenizers``).

Either way the run keeps it as :class:`TextTokenizer`, whose record (the tokenizer as JSON, a
plain string) goes into checkpoints and artifacts, so that predict tokenizes as training did
with nothing but the artifact.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from litcompress.errors import ConfigError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with its padding id, encoding texts for one network."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        padding = self.tokenizer.padding
        if padding is not None:
            return int(padding["pad_id"])
        for token in (PAD, "<pad>"):
            found = self.tokenizer.token_to_id(token)
            if found is not None:
                return found
        return 0

    def encode(self, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
        """Token ids of each text (special tokens added, cut at ``max_length``) and how many
        texts were cut."""
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()
        encodings = self.tokenizer.encode_batch([str(text) for text in texts])
        return [e.ids for e in encodings], sum(1 for e in encodings if e.overflowing)

    def fingerprint(self) -> str:
        """A short hash of the tokenizer (its vocabulary and settings)."""
        return hashlib.sha256(self.to_record().encode()).hexdigest()[:12]

    def to_record(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_record(cls, record: str) -> TextTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(record))


def train_tokenizer(texts: list[str], vocab_size: int, lowercase: bool = True) -> TextTokenizer:
    """A subword tokenizer trained on ``texts``, BERT-style (``[CLS] text [SEP]``, BERT's
    pre-tokenization and normalization) with a byte-pair vocabulary.

    Byte-pair encoding rather than WordPiece: ``tokenizers``' WordPiece trainer breaks ties
    between equally frequent merges in hash order, which changes from process to process (on a
    small corpus, two of five processes learned another vocabulary), while its BPE trainer gives
    one vocabulary for one corpus, so that one seed gives one run.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    steps = [normalizers.NFD(), normalizers.StripAccents()]
    tokenizer.normalizer = normalizers.Sequence(
        [*steps, normalizers.Lowercase()] if lowercase else steps
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, UNK, CLS, SEP, MASK], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, cls_id), (SEP, sep_id)]
    )
    return TextTokenizer(tokenizer)


def load_tokenizer(path: str | Path, option: str) -> TextTokenizer:
    """The fast tokenizer of a local pretrained folder (``AutoTokenizer.from_pretrained``).

    Raises:
        ConfigError: the folder is missing or holds no tokenizer; the message names ``option``.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"{option}={path}: no such folder. Give a folder with a pretrained tokenizer "
            f"(tokenizer.json or vocab.txt, as save_pretrained writes it), or {option}=null to "
            f"train one on the training texts."
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError, ...
        raise ConfigError(
            f"{option}={path} holds no tokenizer that transformers can load ({type(error).__name__}"
            f": {str(error).splitlines()[0]}). Point it at the folder save_pretrained wrote."
        ) from None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(
            f"{option}={path} holds a slow (Python) tokenizer; litcompress needs a fast one "
            f"(tokenizer.json): load it and save it again with transformers' AutoTokenizer."
        )
    return TextTokenizer(backend)
