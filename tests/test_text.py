"""Text classification: the text data sources on small files, both tokenizer paths, Transformer
models (from a config and from a local pretrained folder), the text LightningModule chosen by the
data, a real run that reports, exact resume, and bad input refused before any work."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from litcompress.checkpoint import CHECKPOINT_KEY, load_network, read_checkpoint
from litcompress.data.reviews import ReviewsData
from litcompress.data.text import pad_batch
from litcompress.data.text_files import TextFilesData
from litcompress.data.tokenizer import TextTokenizer, load_tokenizer
from litcompress.errors import ConfigError
from litcompress.models.text import BertClassifier, pretrained_classifier
from litcompress.run import run
from litcompress.spec import InputSpec
from tests.conftest import compose_config

WORDS = {
    "good": "a wonderful moving film with great acting and a fine story",
    "bad": "a dull boring mess with awful acting and a weak plot",
}
# A quick run: a few batches, no progress bar or summary, short timing.
QUIET = [
    "trainer=debug",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "report.min_run_time_s=0.05",
]
# A tiny, quick text run.
FAST_TEXT = [
    "model=bert_tiny",
    "model.layers=1",
    "model.hidden=32",
    "model.heads=2",
    "model.ffn=64",
    "trainer=debug",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "report.min_run_time_s=0.05",
    "data.batch_size=16",
    "data.vocab_size=200",
    "data.max_length=16",
]


def texts(n: int) -> list[tuple[str, str]]:
    """``n`` short texts of two classes whose words tell the class."""
    rows = []
    for i in range(n):
        label = "good" if i % 2 else "bad"
        words = WORDS[label].split()
        rows.append((" ".join(words[i % 3 :] + words[: i % 3]), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file, delimiter=delimiter)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"review": t, "sentiment": y}) + "\n" for t, y in rows))
    return path


def files_data(**kwargs) -> TextFilesData:
    options = dict(text_column="review", label_column="sentiment", vocab_size=200, max_length=16)
    return TextFilesData(**{**options, **kwargs})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_one_file_of_any_format_is_split_by_fractions(tmp_path, suffix):
    rows = texts(60)
    path = tmp_path / f"texts{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    else:
        write_csv(path, rows, "\t" if suffix == ".tsv" else ",")
    data = files_data(path=str(path))
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (48, 6, 6)
    assert data.classes == ["bad", "good"] and data.num_classes == 2
    ids, label = data.train_set[0]
    assert ids.dtype == torch.long and int(label) in (0, 1)
    assert data.input_spec == InputSpec.tokens(data.tokenizer.vocab_size, 16, 16)


def test_a_file_per_split_and_batches_padded_to_their_longest_text(tmp_path):
    data = files_data(
        train=str(write_csv(tmp_path / "train.csv", texts(40))),
        val=str(write_csv(tmp_path / "val.csv", texts(8))),
        test=str(write_csv(tmp_path / "test.csv", [("wonderful", "good"), *texts(7)])),
        max_length=8,
    )
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (40, 8, 8)
    assert data.truncated["train"] > 0  # 11-word texts cut at 8 tokens, and counted
    input_ids, mask, labels = next(iter(data.test_dataloader()))
    assert input_ids.shape == mask.shape and input_ids.shape[1] == 8
    assert mask[0].sum() == 3  # "[CLS] wonderful [SEP]": padded, and the mask says where
    assert input_ids[0, 3:].eq(data.tokenizer.pad_id).all() and labels.shape == (8,)
    short = pad_batch(
        [(torch.tensor([5, 6]), torch.tensor(0)), (torch.tensor([7]), torch.tensor(1))]
    )
    assert short[0].tolist() == [[5, 6], [7, 0]] and short[1].tolist() == [[1, 1], [1, 0]]


def test_the_reviews_corpus_reads_offline_with_two_or_three_classes():
    data = ReviewsData(limit=600, vocab_size=500)
    data.setup()
    assert data.classes == ["fresh", "rotten"]
    assert len(data.train_set) + len(data.val_set) + len(data.test_set) == 600
    with_plot = ReviewsData(limit=900, vocab_size=500, with_plot=True)
    with_plot.setup()
    assert with_plot.classes == ["fresh", "plot", "rotten"]


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory) -> Path:
    """A tiny BERT and its tokenizer saved with save_pretrained, as a user's download is."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *sorted(set(" ".join(WORDS.values()).split())),
    ]
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(vocab)})
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_a_pretrained_tokenizer_and_model_from_a_local_folder(pretrained_folder, tmp_path):
    tokenizer = load_tokenizer(pretrained_folder, "data.tokenizer")
    ids, cut = tokenizer.encode(["a wonderful film"], 16)
    assert cut == 0 and ids[0][0] == tokenizer.tokenizer.token_to_id("[CLS]")
    again = TextTokenizer.from_record(tokenizer.to_record())  # what checkpoints carry
    assert again.encode(["a wonderful film"], 16) == (ids, 0)
    net = pretrained_classifier(3, tokenizer.vocab_size, 16, str(pretrained_folder))
    logits = net(torch.tensor(ids), torch.ones(1, len(ids[0]), dtype=torch.long))
    assert logits.shape == (1, 3)
    with pytest.raises(ConfigError, match="vocabulary of .* tokens, but the tokenizer has 999"):
        pretrained_classifier(3, 999, 16, str(pretrained_folder))
    with pytest.raises(ConfigError, match="at most 32 tokens, but data.max_length=64"):
        pretrained_classifier(3, tokenizer.vocab_size, 64, str(pretrained_folder))
    with pytest.raises(ConfigError, match="data.tokenizer=.*: no such folder"):
        load_tokenizer(tmp_path / "missing", "data.tokenizer")
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        load_tokenizer(tmp_path, "data.tokenizer")


def test_a_bert_from_a_config_maps_ids_and_mask_to_logits():
    net = BertClassifier(4, vocab_size=100, max_length=16, layers=1, hidden=32, heads=2, ffn=64)
    spec = InputSpec.tokens(100, 16)
    assert net(*spec.example(3)).shape == (3, 4)
    with pytest.raises(ConfigError, match="model.hidden=30 is not a multiple of model.heads=4"):
        BertClassifier(4, vocab_size=100, max_length=16, hidden=30, heads=4)


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        ([("fine", "good")] * 20, {"text_column": "text"}, "has no column 'text'"),
        ([("", "good"), *texts(30)], {}, "1 train texts are empty"),
        (texts(30), {"path": None}, "needs either data.path"),
    ],
)
def test_bad_text_files_are_refused_with_the_fix(tmp_path, rows, options, message):
    path = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(ConfigError, match=message):
        data = files_data(**{"path": str(path), **options})
        data.setup()


def test_a_label_only_val_or_test_has_is_refused(tmp_path):
    data = files_data(
        train=str(write_csv(tmp_path / "train.csv", texts(20))),
        test=str(write_csv(tmp_path / "test.csv", [*texts(4), ("so so", "meh")])),
    )
    with pytest.raises(ConfigError, match="test texts have labels the training texts never have"):
        data.setup()


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("texts") / "texts.csv", texts(120))


def text_run(
    csv_path: Path, *overrides: str, output_dir: Path, fast: list[str] = FAST_TEXT
) -> float | None:
    config = compose_config(
        [
            "data=text_files",
            f"data.path={csv_path}",
            "data.text_column=review",
            "data.label_column=sentiment",
            *fast,
            *overrides,
        ],
        output_dir=output_dir,
    )
    return run(config)


def test_a_text_run_trains_reports_and_reloads_with_the_text_module(text_csv, tmp_path):
    out = tmp_path / "run"
    whole = ["trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0"]
    text_run(text_csv, "trainer.max_epochs=6", *whole, output_dir=out)
    report = json.loads((out / "report.json").read_text())
    assert report["after"]["test_acc"] > 0.9  # the words tell the class
    assert report["measured_on"]["inputs"] == "16 tokens"
    assert report["after"]["macs"] > 0 and report["after"]["params"] > 0
    checkpoint = read_checkpoint(out / "checkpoints" / "last.ckpt")  # weights_only=True
    record = checkpoint[CHECKPOINT_KEY]
    assert record["inputs"]["kind"] == "text" and record["inputs"]["classes"] == ["bad", "good"]
    assert record["input_spec"]["kind"] == "tokens"
    tokenizer = TextTokenizer.from_record(record["inputs"]["tokenizer"])
    ids, _ = tokenizer.encode([WORDS["good"], WORDS["bad"]], 16)
    net = load_network(out / "checkpoints" / "last.ckpt")
    logits = net(torch.tensor(ids), torch.ones(2, len(ids[0]), dtype=torch.long))
    assert logits.argmax(1).tolist() == [1, 0]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"val/f1", "test/f1", "val/acc", "test/acc"} <= set(events.Tags()["scalars"])


def test_init_from_a_text_checkpoint_tokenizes_as_it_was_trained(text_csv, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    text_run(text_csv, "trainer.max_epochs=2", output_dir=first)
    checkpoint = first / "checkpoints" / "last.ckpt"
    # Another vocabulary size would train another tokenizer: the checkpoint's is used instead.
    text_run(
        text_csv,
        f"init_from={checkpoint}",
        "data.vocab_size=150",
        "trainer.max_epochs=1",
        output_dir=second,
    )
    report = json.loads((second / "report.json").read_text())
    assert report["before"]["test_acc"] is not None
    tokenizers = [
        read_checkpoint(run / "checkpoints" / "last.ckpt")[CHECKPOINT_KEY]["inputs"]["tokenizer"]
        for run in (first, second)
    ]
    assert tokenizers[0] == tokenizers[1]


def test_a_text_run_resumes_exactly(text_csv, tmp_path):
    whole, first, second = tmp_path / "whole", tmp_path / "first", tmp_path / "second"
    # A constant learning rate: the first half's schedule is the whole run's.
    text_run(text_csv, "trainer.max_epochs=3", "scheduler=none", output_dir=whole)
    text_run(text_csv, "trainer.max_epochs=2", "scheduler=none", output_dir=first)
    text_run(
        text_csv,
        "trainer.max_epochs=3",
        "scheduler=none",
        f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
        output_dir=second,
    )
    expected = read_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"]
    resumed = read_checkpoint(second / "checkpoints" / "last.ckpt")["state_dict"]
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=resnet"], "does not take text \\(token ids\\).*model=bert_tiny"),
        (["model=bert_tiny", "module=image_classifier"], "module=image_classifier takes images"),
    ],
)
def test_a_text_run_refuses_an_image_model_or_module(text_csv, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        text_run(text_csv, *overrides, output_dir=tmp_path / "run", fast=["trainer=debug"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=bert_tiny"], "does not take images.*model=resnet"),
        (["module=text_classifier"], "module=text_classifier takes text \\(token ids\\), but"),
    ],
)
def test_an_image_run_refuses_a_text_model_or_module(tmp_path, overrides, message):
    config = compose_config(
        [*overrides, "trainer=debug", "~callbacks.progress_bar"], output_dir=tmp_path / "run"
    )
    with pytest.raises(ConfigError, match=message):
        run(config)


@pytest.fixture(scope="module")
def exported_text_run(text_csv, tmp_path_factory) -> Path:
    """A text run that exports its network to ONNX, OpenVINO and a torch program."""
    out = tmp_path_factory.mktemp("text-export") / "run"
    whole = ["trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0"]
    text_run(
        text_csv,
        "trainer.max_epochs=6",
        *whole,
        "trainer.limit_test_batches=1.0",
        "export=[onnx,openvino,pt2]",
        output_dir=out,
    )
    return out


def test_a_text_run_exports_with_dynamic_batch_and_sequence_and_parity(exported_text_run):
    report = json.loads((exported_text_run / "report.json").read_text())
    for fmt in ("onnx", "openvino", "pt2"):
        entry = report["export"][fmt]
        assert entry["precision"] == "fp32" and entry["parity"]["passed"], (fmt, entry)
        assert entry["parity"]["max_rel_diff"] <= 1e-4
    import onnx

    model = onnx.load(str(exported_text_run / "export" / "model.onnx"))
    inputs = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in model.graph.input
    }
    assert list(inputs) == ["input_ids", "attention_mask"]
    assert inputs["input_ids"][0] == "batch" and isinstance(inputs["input_ids"][1], str)


def test_predict_texts_in_a_fresh_process_from_the_onnx_file_alone(
    exported_text_run, tmp_path, caplog
):
    from tests.test_deploy import litcompress

    alone = tmp_path / "model.onnx"  # the ONNX file carries its tokenizer and class names
    alone.write_bytes((exported_text_run / "export" / "model.onnx").read_bytes())
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{WORDS['good']}\n{WORDS['bad']}\n")
    result = litcompress(
        "predict",
        str(alone),
        "--text",
        WORDS["bad"],
        "--file",
        str(texts),
        "--top-k",
        "1",
        "--output",
        str(tmp_path / "p.json"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [row[1].split()[0] for row in rows] == ["bad", "good", "bad"]
    written = json.loads((tmp_path / "p.json").read_text())
    assert written[1]["text"] == WORDS["good"] and written[1]["predictions"][0]["class"] == "good"
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    from litcompress.cli import main

    with caplog.at_level(logging.ERROR, logger="litcompress.cli"):
        assert main(["predict", str(alone), str(image)]) == 2  # an image for a text model
    assert "is a text model" in caplog.text


def test_evaluate_a_text_artifact_matches_the_report(exported_text_run):
    from litcompress.deploy.evaluate import data_config, evaluate, load_data
    from litcompress.deploy.runtimes import load_artifact

    report = json.loads((exported_text_run / "report.json").read_text())
    runtime = load_artifact(exported_text_run / "export" / "model.xml")
    data = load_data(data_config(runtime.meta["data"], [], "model.xml"), runtime.meta["inputs"])
    figures = evaluate(runtime, data, min_run_time_s=0.05)
    assert figures["test_acc"] == pytest.approx(report["after"]["test_acc"])


def test_litcompress_export_of_a_text_run_checks_it_on_its_own_tokenization(
    exported_text_run, tmp_path
):
    from litcompress.cli import main

    output = tmp_path / "again.onnx"
    assert (
        main(["export", str(exported_text_run), "--format", "onnx", "--output", str(output)]) == 0
    )
    from litcompress.deploy.metadata import read_metadata

    meta = read_metadata(output)
    assert meta["parity"]["passed"] and meta["inputs"]["kind"] == "text"
    assert meta["input_spec"]["kind"] == "tokens"


def test_training_batches_are_length_bucketed_seeded_and_complete(tmp_path):
    from litcompress.seeding import LengthBucketedSampler

    lengths = [3 + (i * 37) % 60 for i in range(1000)]
    first = list(LengthBucketedSampler(lengths, 16, seed=1, epoch=2))
    assert first == list(LengthBucketedSampler(lengths, 16, seed=1, epoch=2))  # (seed, epoch)
    assert first != list(LengthBucketedSampler(lengths, 16, seed=1, epoch=3))
    assert sorted(i for i, _ in first) == list(range(1000))  # every example once
    batches = [[lengths[i] for i, _ in first[s : s + 16]] for s in range(0, 1000, 16)]
    padded = sum(max(b) * len(b) for b in batches)
    assert 1 - sum(lengths) / padded < 0.05  # shuffled without bucketing: about 45%
    data = ReviewsData(limit=1000, vocab_size=500)
    data.setup()
    record = data.inputs_record()
    assert 0 <= record["padding"] < 0.1


def test_a_datasets_dataset_saved_to_disk_gives_its_splits_and_class_names(tmp_path):
    import datasets

    from litcompress.data.hf_dataset import HFDatasetData

    features = datasets.Features(
        {"review": datasets.Value("string"), "stars": datasets.ClassLabel(names=["bad", "good"])}
    )

    def split(rows):
        return datasets.Dataset.from_dict(
            {"review": [t for t, _ in rows], "stars": [int(y == "good") for _, y in rows]},
            features=features,
        )

    datasets.DatasetDict({"train": split(texts(40)), "test": split(texts(10))}).save_to_disk(
        tmp_path / "dict"
    )
    data = HFDatasetData(path=str(tmp_path / "dict"), text_column="review", label_column="stars")
    data.setup()
    assert data.classes == ["bad", "good"]  # the ClassLabel's names
    assert (len(data.train_set) + len(data.val_set), len(data.test_set)) == (40, 10)
    split(texts(50)).save_to_disk(tmp_path / "one")
    one = HFDatasetData(path=str(tmp_path / "one"), text_column="review", label_column="stars")
    one.setup()
    assert (len(one.train_set), len(one.val_set), len(one.test_set)) == (40, 5, 5)
    with pytest.raises(ConfigError, match="has no column 'text'"):
        HFDatasetData(path=str(tmp_path / "one"), label_column="stars").setup()
    with pytest.raises(ConfigError, match="no such folder"):
        HFDatasetData(path=str(tmp_path / "missing")).setup()


def test_a_users_own_text_network_trains_by_the_constructor_contract(
    text_csv, tmp_path, monkeypatch
):
    (tmp_path / "my_text_models.py").write_text(
        "from torch import nn\n"
        "class BagOfWords(nn.Module):\n"
        "    def __init__(self, num_classes, vocab_size, max_length, dim=16):\n"
        "        super().__init__()\n"
        "        self.embed = nn.EmbeddingBag(vocab_size, dim, mode='sum')\n"
        "        self.head = nn.Linear(dim, num_classes)\n"
        "    def forward(self, input_ids, attention_mask):\n"
        "        weights = attention_mask.float()\n"
        "        return self.head(self.embed(input_ids, per_sample_weights=weights))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    text_run(
        text_csv,
        "model=cnn",  # any model group option; its target replaced by the user's class
        "model._target_=my_text_models.BagOfWords",
        "~model.width",
        "+model.dim=8",
        output_dir=out,
        fast=[
            *QUIET,
            "data.vocab_size=200",
            "data.max_length=16",
        ],
    )
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "my_text_models.BagOfWords" and report["after"]["params"] > 0


def test_a_run_fine_tunes_a_local_pretrained_folder_with_its_tokenizer(
    pretrained_folder, text_csv, tmp_path
):
    out = tmp_path / "run"
    text_run(
        text_csv,
        "model=hf",
        f"model.path={pretrained_folder}",
        f"data.tokenizer={pretrained_folder}",
        output_dir=out,
        fast=[
            *QUIET,
            "data.max_length=16",
        ],
    )
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "litcompress.models.text.pretrained_classifier"
    net = load_network(out / "checkpoints" / "last.ckpt")  # rebuilt from the folder, reloaded
    assert net(*InputSpec.tokens(21, 16).example(2)).shape == (2, 2)


def test_a_local_transformers_folder_teaches_a_student_that_shares_its_tokenizer(
    pretrained_folder, text_csv, tmp_path
):
    out = tmp_path / "run"
    text_run(
        text_csv,
        "compress=distill",
        f"compress.distill.teacher_checkpoint={pretrained_folder}",
        f"data.tokenizer={pretrained_folder}",
        "trainer.max_epochs=1",
        output_dir=out,
    )
    report = json.loads((out / "report.json").read_text())
    assert report["distill"]["teacher"] == str(pretrained_folder.resolve())
    assert 0 <= report["distill"]["teacher_val_acc"] <= 1
    # A folder fine-tuned for other classes cannot teach these.
    other = tmp_path / "three-classes"
    other.mkdir()
    config = json.loads((pretrained_folder / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(3)}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="classifies into 3 classes, the student into 2"):
        text_run(
            text_csv,
            "compress=distill",
            f"compress.distill.teacher_checkpoint={other}",
            f"data.tokenizer={pretrained_folder}",
            output_dir=tmp_path / "refused",
        )


@pytest.mark.slow
def test_a_sweep_of_text_runs_ends_with_its_summary(text_csv, tmp_path):
    from tests.test_cli import train_py

    result = train_py(
        "-m",
        "data=text_files",
        f"data.path={text_csv}",
        "data.text_column=review",
        "data.label_column=sentiment",
        *FAST_TEXT,
        "model.hidden=32,64",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {row["status"] for row in rows} == {"done"}
    assert len({row["params_after"] for row in rows}) == 2
