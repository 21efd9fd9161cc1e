"""The model-backed report-metric backends of the ``metrics`` extra, for real.

``make env`` installs ``.[dev,nb,metrics]``, so these tests always run (none skips): each backend
must import through the module and entry point that ``medkit.eval.report_metrics`` uses (importing
``RaTEScore`` runs ``medspacy.load``, so a missing or numpy-1-built spaCy stack fails here), at the
version the extra pins, and must work under the pinned transformers on tiny models with random
weights that the tests build in a temporary folder.  Nothing is downloaded (tests run with
HF_HUB_OFFLINE=1); the released weights are only used by ``make reproduce PROFILE=paper``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
from pathlib import Path

import pytest

from medkit.eval import report_metrics as rm
from medkit.eval.report_metrics import BackendUnavailable, score_reports

INSTALL_HINT = ("the metrics extra is not installed in this environment: `make env` installs "
                "'.[dev,nb,metrics]' (pip install -e '.[dev,nb,metrics]')")


def _entry(backend: str):
    try:
        return rm._entry_point(backend, f"package {rm.BACKENDS[backend][2]}")
    except BackendUnavailable as exc:
        pytest.fail(f"{INSTALL_HINT}; {exc}; cause: {exc.__cause__!r}")


# ---------------------------------------------------------------- imports
@pytest.mark.parametrize("backend", sorted(rm.BACKENDS))
def test_backend_entry_point_imports(backend):
    module, attr, _ = rm.BACKENDS[backend]
    entry = _entry(backend)
    assert callable(entry)
    assert entry is getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("backend", sorted(rm.BACKENDS))
def test_backend_installed_at_the_pinned_version(backend):
    dist, _, version = rm.BACKENDS[backend][2].partition("==")
    try:
        installed = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{INSTALL_HINT}; {dist} is missing")
    assert installed == version


def test_ratescore_sentence_splitter_runs_on_numpy2():
    # RaTEScore imports medspacy (undeclared by RaTEScore, pinned by the extra) and builds a
    # PyRuSH + ConText pipeline on spacy.blank("en") at import time; spaCy/thinc wheels built
    # against numpy 1 fail right here ("numpy.dtype size changed").
    import numpy

    _entry("ratescore")
    from RaTEScore.utils import sentence_split

    assert int(numpy.__version__.split(".")[0]) >= 2
    sents, starts = sentence_split(["No acute findings. Heart size is normal.", "No effusion."])
    assert sents == ["No acute findings.", "Heart size is normal.", "No effusion."]
    assert starts == [1, 0, 1]


# ---------------------------------------------------------------- tiny local models
WORDS = ["no", "acute", "findings", "heart", "size", "is", "normal", "there", "pneumothorax",
         "effusion", "small", "left", "right", "lung", "a", "b", "1", "2", ".", ","]
RATE_LABELS = ["O"] + [f"{p}-{t}" for t in ("ABNORMALITY", "ANATOMY", "DISEASE",
                                           "NON-ABNORMALITY", "NON-DISEASE") for p in "BI"]


def _bert_config(**kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=64, **kw)


def _bert_tokenizer():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Folders with a tiny BERT encoder, a BERT token classifier with RaTE-NER's labels and a
    tiny RoBERTa encoder (byte-level BPE with no merges), random weights, saved offline."""
    _entry("ratescore")  # the transformers classes below come with the backends' stack
    import torch
    from transformers import (BertForTokenClassification, BertModel, RobertaConfig,
                              RobertaModel, RobertaTokenizer)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_models")
    out = {k: root / k for k in ("bert", "ner", "roberta")}
    BertModel(_bert_config()).save_pretrained(out["bert"])
    _bert_tokenizer().save_pretrained(out["bert"])
    ner = _bert_config(num_labels=len(RATE_LABELS), id2label=dict(enumerate(RATE_LABELS)),
                       label2id={lab: i for i, lab in enumerate(RATE_LABELS)})
    BertForTokenClassification(ner).save_pretrained(out["ner"])
    _bert_tokenizer().save_pretrained(out["ner"])
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for t in sorted(set("".join(WORDS))) + ["\u0120"]:
        vocab.setdefault(t, len(vocab))
    RobertaTokenizer(vocab=vocab, merges=[], model_max_length=64).save_pretrained(out["roberta"])
    RobertaModel(RobertaConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=32,
                               max_position_embeddings=70, pad_token_id=1)
                 ).save_pretrained(out["roberta"])
    return {k: str(v) for k, v in out.items()}


# ---------------------------------------------------------------- RaTEScore
@pytest.fixture
def local_ratescore(monkeypatch, tiny):
    monkeypatch.setattr(rm, "RATESCORE_MODELS", {"bert_model": tiny["ner"],
                                                 "eval_model": tiny["bert"],
                                                 "affinity_matrix": "long"})


def test_ratescore_scores_through_medkit(local_ratescore):
    hyps = ["No acute findings. Heart size is normal.", "Small left effusion."]
    refs = ["Heart size is normal. No pneumothorax.", "No effusion."]
    r = score_reports(hyps, refs, metrics=("ratescore",))["ratescore"]
    assert r.status == "ok", r.status
    assert len(r.per_report) == 2 and all(0.0 <= x <= 1.0 for x in r.per_report)
    assert r.metadata["source"] == "computed"


def test_ratescore_dropped_report_is_not_a_number(local_ratescore):
    # RaTEScore's sentence splitter drops the empty report, so it returns one score for two
    # pairs (scored against the wrong reference); medkit refuses the misaligned result.
    r = score_reports(["", "Small left effusion."], ["No effusion.", "No effusion."],
                      metrics=("ratescore",))["ratescore"]
    assert r.value is None
    assert r.status.startswith("not computed: needs package RaTEScore==0.6.0")
    assert "returned 1 scores for 2 reports" in r.status
    # every report empty: RaTEScore itself fails (tokenizer called on no sentence)
    r = score_reports([""], ["No effusion."], metrics=("ratescore",))["ratescore"]
    assert r.value is None and "scoring failed" in r.status


# ---------------------------------------------------------------- BERTScore
@pytest.fixture
def local_bertscore(monkeypatch, tiny):
    bert_score = importlib.import_module("bert_score")
    baseline = Path(bert_score.__file__).parent / "rescale_baseline/en/distilroberta-base.tsv"
    assert baseline.is_file()
    monkeypatch.setattr(rm, "BERTSCORE_OPTIONS", {
        "model_type": tiny["roberta"], "num_layers": 1, "lang": "en",
        "rescale_with_baseline": True, "idf": False, "baseline_path": str(baseline)})


def test_bertscore_encodes_like_transformers4(local_bertscore, tiny):
    from bert_score.utils import sent_encode
    from transformers import AutoTokenizer

    scorer = rm._bertscorer("test")
    plain = AutoTokenizer.from_pretrained(tiny["roberta"])
    # bert-score asks for add_prefix_space=True (RoBERTa's slow tokenizer then encodes the first
    # word as " heart"); transformers 5 ignores that keyword, medkit's tokenizer honours it.
    assert sent_encode(scorer._tokenizer, "heart size") == plain.encode(" heart size")
    assert sent_encode(plain, "heart size") != plain.encode(" heart size")
    # empty report: transformers 4's build_inputs_with_special_tokens([]) -> <s></s>
    assert sent_encode(scorer._tokenizer, "") == [plain.cls_token_id, plain.sep_token_id]


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_bertscore_scores_through_medkit(local_bertscore):
    hyps = ["Heart size is normal.", "", "No effusion."]
    refs = ["Heart size is normal.", "No acute findings.", "Small effusion."]
    f1 = rm._bertscore(hyps, refs)
    assert len(f1) == 3 and all(math.isfinite(x) for x in f1)
    assert f1[0] == pytest.approx(1.0, abs=1e-5)  # identical pair, rescaled with the baseline
    assert f1[1] < 0  # empty candidate: raw 0, below the baseline


# ---------------------------------------------------------------- CheXbert
@pytest.fixture
def local_chexbert(monkeypatch, tmp_path):
    """f1chexbert's real F1CheXbert, with its two hub look-ups answered by the tiny BERT and
    its checkpoint already in place (a state dict saved as CheXbert's training code saves it)."""
    _entry("chexbert")
    import torch

    impl = importlib.import_module("f1chexbert.f1chexbert")

    class Tok:
        @staticmethod
        def from_pretrained(name, *a, **kw):
            assert name == "bert-base-uncased"
            return _bert_tokenizer()

    class Cfg:
        @staticmethod
        def from_pretrained(name, *a, **kw):
            assert name == "bert-base-uncased"
            return _bert_config()

    monkeypatch.setattr(impl, "BertTokenizer", Tok)
    monkeypatch.setattr(impl, "AutoConfig", Cfg)
    monkeypatch.setattr(impl, "CACHE_DIR", str(tmp_path / "chexbert"))
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in impl.bert_labeler(inference=True).state_dict().items()}
    (tmp_path / "chexbert").mkdir()
    torch.save({"epoch": 1, "model_state_dict": state}, tmp_path / "chexbert" / "chexbert.pth")
    return impl


def test_chexbert_semb_through_medkit(local_chexbert):
    same = "Heart size is normal. No effusion."
    semb = rm._chexbert_semb([same, "Small left effusion.", ""], [same, "No pneumothorax.", "No effusion."])
    assert semb[0] == pytest.approx(1.0, abs=1e-6)
    assert all(-1.0 - 1e-6 <= x <= 1.0 + 1e-6 for x in semb)


def test_chexbert_ids_match_f1chexbert_rules():
    tok = _bert_tokenizer()
    ids = rm._chexbert_ids(tok, "  Heart\nsize   is normal. ")
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "heart", "size", "is", "normal", ".", "[SEP]"]
    assert rm._chexbert_ids(tok, "") == [tok.cls_token_id, tok.sep_token_id]
    long = rm._chexbert_ids(tok, "no " * 600)
    assert len(long) == 512 and long[-1] == tok.sep_token_id


def test_chexbert_checkpoint_fetched_into_f1chexbert_cache(monkeypatch, tmp_path):
    # f1chexbert's own downloader passes force_filename, which this huggingface_hub rejects
    import inspect

    import huggingface_hub

    _entry("chexbert")
    impl = importlib.import_module("f1chexbert.f1chexbert")
    assert "force_filename" not in inspect.signature(huggingface_hub.hf_hub_download).parameters
    blob = tmp_path / "hub" / "chexbert.pth"
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    calls = []

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        return str(blob)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(impl, "CACHE_DIR", str(tmp_path / "cache"))
    target = rm._chexbert_checkpoint()
    assert target == tmp_path / "cache" / "chexbert.pth"
    assert target.read_bytes() == b"weights"
    assert calls == [("StanfordAIMI/RRG_scorers", "chexbert.pth")]
    rm._chexbert_checkpoint()  # present: no second download
    assert len(calls) == 1


# ---------------------------------------------------------------- RadGraph
# radgraph 0.1.18's vendored allennlp calls encode_plus and build_inputs_with_special_tokens,
# removed in transformers 5; medkit restores them on the tokenizers radgraph loads.  The
# reference values below were recorded under transformers 4.57.6 (tokenizers 0.22.2, in a
# scratch venv with radgraph 0.1.18, where AutoTokenizer(use_fast=True) gives BertTokenizerFast)
# by making radgraph's exact calls on the folders _rg_bert writes.
RG_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "acute", "cardio", "##pul",
            "##monary", "process", "heart", "size", "is", "normal", "small", "left", "pleural",
            "effusion", "##s", "pneumo", "##thorax", "a", "b", "1", "2", "cm", "cafe", "na",
            "##ive", "free", "No", "Heart", "NORMAL", "Caf", "##é", "##ï", "##ve", ".", ",", ";",
            "(", ")", "-", "%", "/"]
_HEART = "Heart size is NORMAL; small left pleural effusions (2 cm)."
_HEART_OFFSETS = [(0, 5), (6, 10), (11, 13), (14, 20), (20, 21), (22, 27), (28, 32), (33, 40),
                  (41, 49), (49, 50), (51, 52), (52, 53), (54, 56), (56, 57), (57, 58)]
_COMMON_T4 = {  # texts both casings encode alike
    "  no\tacute \n heart  ": ([5, 6, 11], [(2, 4), (5, 10), (13, 18)]),
    "pneumothorax-free": ([20, 21, 43, 30], [(0, 6), (6, 12), (12, 13), (13, 17)]),
    "unknownword 1/2 %": ([1, 24, 45, 25, 44], [(0, 11), (12, 13), (13, 14), (14, 15), (16, 17)]),
    "": ([], []),
    "\u200b": ([], []),  # a format character: BERT's normaliser drops it
}
_NO_ACUTE_OFFSETS = [(0, 2), (3, 8), (9, 15), (15, 18), (18, 24), (25, 32), (32, 33)]
# tokenizer wrapper's encode_plus(text=..., add_special_tokens=False, max_length=None, stride=0,
# truncation=False, return_tensors=None, return_offsets_mapping=True,
# return_attention_mask=False, return_token_type_ids=True): (input_ids, offset_mapping); every
# token_type_id was 0
RG_T4_TEXTS = {
    "uncased": {"No acute cardiopulmonary process.": ([5, 6, 7, 8, 9, 10, 38], _NO_ACUTE_OFFSETS),
                _HEART: ([11, 12, 13, 14, 40, 15, 16, 17, 18, 19, 41, 25, 26, 42, 38],
                         _HEART_OFFSETS),
                "Café naïve": ([27, 28, 29], [(0, 4), (5, 7), (7, 10)]), **_COMMON_T4},
    "cased": {"No acute cardiopulmonary process.": ([31, 6, 7, 8, 9, 10, 38], _NO_ACUTE_OFFSETS),
              _HEART: ([32, 12, 13, 33, 40, 15, 16, 17, 18, 19, 41, 25, 26, 42, 38],
                       _HEART_OFFSETS),
              "Café naïve": ([34, 35, 28, 36, 37], [(0, 3), (3, 4), (5, 7), (7, 8), (8, 10)]),
              **_COMMON_T4},
}
# _intra_word_tokenize's encode_plus(word, add_special_tokens=False, return_tensors=None,
# return_offsets_mapping=False, return_attention_mask=False, return_token_type_ids=False)
_COMMON_WORDS_T4 = {"cardiopulmonary": [7, 8, 9], "effusions": [18, 19], ".": [38], "xyz": [1],
                    "\u200b": [], "": []}
RG_T4_WORDS = {"uncased": {"No": [5], "Café": [27], "naïve": [28, 29], **_COMMON_WORDS_T4},
               "cased": {"No": [31], "Café": [34, 35], "naïve": [28, 36, 37], **_COMMON_WORDS_T4}}
# PretrainedTransformerMismatchedIndexer(model_name, max_length=8).tokens_to_indices(RG_WORDS):
# token_ids fold into segments of 6 wordpieces, each [CLS] ... [SEP] from
# build_inputs_with_special_tokens; offsets (first, last wordpiece) per word, (-1, -1) for none
RG_WORDS = ["No", "acute", "cardiopulmonary", "process", ".", "Small", "left", "Café", "\u200b",
            "effusions", "(", "2", "cm", ")"]
RG_T4_INDEXED = {
    "uncased": ([2, 5, 6, 7, 8, 9, 10, 3, 2, 38, 15, 16, 27, 18, 19, 3, 2, 41, 25, 26, 42, 3],
                [(1, 1), (2, 2), (3, 5), (6, 6), (7, 7), (8, 8), (9, 9), (10, 10), (-1, -1),
                 (11, 12), (13, 13), (14, 14), (15, 15), (16, 16)]),
    "cased": ([2, 31, 6, 7, 8, 9, 10, 3, 2, 38, 1, 16, 34, 35, 18, 3, 2, 19, 41, 25, 26, 42, 3],
              [(1, 1), (2, 2), (3, 5), (6, 6), (7, 7), (8, 8), (9, 9), (10, 11), (-1, -1),
               (12, 13), (14, 14), (15, 15), (16, 16), (17, 17)]),
}
# PretrainedTransformerTokenizer.tokenize("Café naïve, no effusions."): (text, id, idx, idx_end)
_TAIL_T4 = [(",", 39, 10, 11), ("no", 5, 12, 14), ("effusion", 18, 15, 23), ("##s", 19, 23, 24),
            (".", 38, 24, 25), ("[SEP]", 3, None, None)]
RG_T4_WRAPPER = {
    "uncased": [("[CLS]", 2, None, None), ("cafe", 27, 0, 4), ("na", 28, 5, 7),
                ("##ive", 29, 7, 10), *_TAIL_T4],
    "cased": [("[CLS]", 2, None, None), ("Caf", 34, 0, 3), ("##é", 35, 3, 4), ("na", 28, 5, 7),
              ("##ï", 36, 7, 8), ("##ve", 37, 8, 10), *_TAIL_T4],
}
CASINGS = ("uncased", "cased")


def _rg_bert(root: Path, casing: str = "uncased") -> str:
    """A BERT folder as a RadGraph config names one: config, vocab.txt and tokenizer config, no
    weights (radgraph builds the encoder from its config; RadGraph's weights.th holds them)."""
    d = root / f"bert-{casing}"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(RG_VOCAB) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": casing == "uncased"}))
    (d / "config.json").write_text(json.dumps(
        {"model_type": "bert", "vocab_size": len(RG_VOCAB), "hidden_size": 16,
         "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
         "max_position_embeddings": 64}))
    return str(d)


def _cached_transformers():
    _entry("radgraph")
    return importlib.import_module("radgraph.allennlp.common.cached_transformers")


@pytest.mark.parametrize("casing", CASINGS)
def test_radgraph_tokenizer_calls_match_transformers4(tmp_path, casing):
    ct = _cached_transformers()
    original = ct.get_tokenizer
    with rm._radgraph_compat():
        tok = ct.get_tokenizer(_rg_bert(tmp_path, casing), use_fast=True)
    assert ct.get_tokenizer is original
    special = {"add_special_tokens": True, "return_token_type_ids": True,
               "return_attention_mask": False}
    # the wrapper's reverse-engineering of the special tokens
    assert dict(tok.encode_plus("a", "b", **special)) == {"input_ids": [2, 22, 3, 23, 3],
                                                          "token_type_ids": [0, 0, 0, 1, 1]}
    assert dict(tok.encode_plus("a", **special)) == {"input_ids": [2, 22, 3],
                                                     "token_type_ids": [0, 0, 0]}
    for text, (ids, offsets) in RG_T4_TEXTS[casing].items():
        enc = tok.encode_plus(text=text, add_special_tokens=False, max_length=None, stride=0,
                              truncation=False, return_tensors=None,
                              return_offsets_mapping=tok.is_fast, return_attention_mask=False,
                              return_token_type_ids=True)
        assert dict(enc) == {"input_ids": ids, "token_type_ids": [0] * len(ids),
                             "offset_mapping": offsets}, text
    for word, ids in RG_T4_WORDS[casing].items():
        enc = tok.encode_plus(word, add_special_tokens=False, return_tensors=None,
                              return_offsets_mapping=False, return_attention_mask=False,
                              return_token_type_ids=False)
        assert dict(enc) == {"input_ids": ids}, word
    assert tok.build_inputs_with_special_tokens([]) == [2, 3]
    assert tok.build_inputs_with_special_tokens([5, 6, 7]) == [2, 5, 6, 7, 3]
    assert tok.build_inputs_with_special_tokens([5], [6, 7]) == [2, 5, 3, 6, 7, 3]


@pytest.mark.parametrize("casing", CASINGS)
def test_radgraph_tokenizer_wrapper_and_indexer_match_transformers4(tmp_path, casing):
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.data.token_indexers import PretrainedTransformerMismatchedIndexer
    from radgraph.allennlp.data.tokenizers.token import Token

    _cached_transformers()
    with rm._radgraph_compat():
        indexer = PretrainedTransformerMismatchedIndexer(
            model_name=_rg_bert(tmp_path, casing), max_length=8)
    wrapper = indexer._allennlp_tokenizer
    texts = lambda toks: [t.text for t in toks]  # noqa: E731
    assert (texts(wrapper.single_sequence_start_tokens), texts(wrapper.single_sequence_end_tokens),
            texts(wrapper.sequence_pair_mid_tokens), wrapper.sequence_pair_second_token_type_id
            ) == (["[CLS]"], ["[SEP]"], ["[SEP]"], 1)
    assert [(t.text, t.text_id, t.idx, t.idx_end)
            for t in wrapper.tokenize("Café naïve, no effusions.")] == RG_T4_WRAPPER[casing]
    out = indexer.tokens_to_indices([Token(w) for w in RG_WORDS], Vocabulary())
    ids, offsets = RG_T4_INDEXED[casing]
    assert out["token_ids"] == ids
    assert [tuple(o) for o in out["offsets"]] == offsets
    assert out["type_ids"] == [0] * len(ids) and out["segment_concat_mask"] == [True] * len(ids)
    assert out["mask"] == [True] * len(RG_WORDS)


def test_radgraph_compat_is_scoped_to_radgraphs_tokenizers(tmp_path, tiny):
    from transformers import AutoTokenizer, BertTokenizer

    ct = _cached_transformers()
    original = ct.get_tokenizer
    bert = _rg_bert(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), rm._radgraph_compat():
        assert ct.get_tokenizer is not original
        raise RuntimeError("boom")
    assert ct.get_tokenizer is original  # restored even when construction fails
    # transformers itself is untouched: other tokenizers, and the class, lack the methods
    assert not hasattr(BertTokenizer, "encode_plus")
    assert not hasattr(AutoTokenizer.from_pretrained(bert), "encode_plus")
    # a non-BERT tokenizer (transformers 4's build_inputs_with_special_tokens differed per class)
    with pytest.raises(TypeError, match="BERT tokenizers only, not RobertaTokenizer"):
        rm._radgraph_tokenizer_compat(AutoTokenizer.from_pretrained(tiny["roberta"]))


RG_NER = ["Anatomy::definitely present", "Observation::definitely present",
          "Observation::definitely absent", "Observation::uncertain"]
RG_RELATIONS = ["modify", "located_at", "suggestive_of"]


def _rg_config(model_dir: Path, encoder: str) -> dict:
    """RadGraph's model folder minus weights: config.json (a DyGIE++ config: NER + relations)
    and the allennlp vocabulary of its label namespaces, named after the dataset (model type)."""
    vocab = model_dir / "vocabulary"
    vocab.mkdir(parents=True)
    (vocab / "non_padded_namespaces.txt").write_text("*tags\n*labels\n")
    (vocab / f"{model_dir.name}__ner_labels.txt").write_text("\n".join([""] + RG_NER) + "\n")
    (vocab / f"{model_dir.name}__relation_labels.txt").write_text("\n".join(RG_RELATIONS) + "\n")
    enc = {"model_name": encoder, "max_length": 8}  # short: long reports fold into segments
    model = {"type": "dygie", "embedder": {"token_embedders": {"bert": enc}}, "initializer": {},
             "module_initializer": {}, "feature_size": 8, "max_span_width": 3,
             "target_task": "relation",
             "feedforward_params": {"num_layers": 1, "hidden_dims": 8, "dropout": 0.0},
             "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
             "modules": {"coref": {"spans_per_word": 0.3, "max_antecedents": 10}, "ner": {},
                         "relation": {"spans_per_word": 0.5},
                         "events": {"trigger_spans_per_word": 0.3,
                                    "argument_spans_per_word": 0.8,
                                    "loss_weights": {"trigger": 1.0, "arguments": 0.5}}}}
    (model_dir / "config.json").write_text(json.dumps(
        {"dataset_reader": {"max_span_width": 3, "token_indexers": {"bert": enc}},
         "model": model}))
    return model


def _tiny_radgraph(cache: Path) -> Path:
    """A tiny radgraph-xl folder under ``cache`` (RadGraph's model_cache_dir): config,
    vocabulary and random weights.th saved from the DyGIE model radgraph builds from that config,
    so RadGraph loads it instead of downloading radgraph-xl.tar.gz."""
    import torch
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models.dygie import DyGIE

    model_dir = cache / rm.RADGRAPH_MODEL_TYPE
    bert = _rg_bert(cache.parent)
    cfg = _rg_config(model_dir, bert)
    torch.manual_seed(0)
    with rm._radgraph_compat():
        emb = token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=bert,
                                                                      max_length=8)
    kwargs = {k: v for k, v in cfg.items()
              if k not in ("type", "embedder", "initializer", "module_initializer")}
    model = DyGIE(vocab=Vocabulary.from_files(str(model_dir / "vocabulary")),
                  embedder=text_field_embedders.BasicTextFieldEmbedder({"bert": emb}), **kwargs)
    with torch.no_grad():  # larger random scores: some spans become entities and relations
        for param in model.parameters():
            param.mul_(4.0)
    torch.save(model.state_dict(), model_dir / "weights.th")
    return cache


@pytest.fixture
def local_radgraph(monkeypatch, tmp_path):
    _entry("radgraph")
    impl = importlib.import_module("radgraph.radgraph")
    monkeypatch.setattr(impl, "CACHE_DIR", str(_tiny_radgraph(tmp_path / "radgraph-cache")))


# radgraph 0.1.18's own F1RadGraph(reward_level="all") under transformers 4.57.6, on CPU, with
# the weights.th _tiny_radgraph writes here, for RG_HYPS / RG_REFS: per-report rewards
_RG_LONG = "heart size is normal no pneumothorax no acute process small left effusion 1 cm"
RG_HYPS = ["No acute cardiopulmonary process.", "Small left pleural effusions, 2 cm.", "", _RG_LONG]
RG_REFS = ["No acute cardiopulmonary process.", "No pneumothorax.", "No effusion.",
           _RG_LONG.replace("left", "right")]
RG_T4_REWARDS = {"radgraph_simple": (1.0, 0.0, 0.0, 11 / 13),
                 "radgraph_partial": (1.0, 0.0, 0.0, 31 / 39),
                 "radgraph_complete": (1.0, 0.0, 0.0, 14 / 31)}


def test_radgraph_f1_through_medkit(local_radgraph, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as the reference ran
    res = score_reports(RG_HYPS, RG_REFS, metrics=tuple(RG_T4_REWARDS))
    for name, want in RG_T4_REWARDS.items():
        r = res[name]
        assert r.status == "ok", r.status
        assert r.metadata["annotations"] == "radgraph model_type='radgraph-xl'"
        # identical reports -> identical non-empty graphs (1.0); empty hypothesis -> 0.0
        assert r.per_report == pytest.approx(want, abs=1e-12)
        assert r.value == pytest.approx(sum(want) / 4)
    # RadCliQ-v1's radgraph_combined comes from the same model
    other = {"bertscore": [0.9, 0.5, 0.1, 0.6], "semb_score": [0.9, 0.4, 0.2, 0.7]}
    r = score_reports(RG_HYPS, RG_REFS, metrics=("radcliq_v1",),
                      component_scores=other)["radcliq_v1"]
    assert r.status == "ok", r.status
    assert r.metadata["component_sources"]["radgraph_combined"] == "computed"
    assert r.metadata["radgraph"] == "radgraph model_type='radgraph-xl'"


def test_radgraph_with_a_non_bert_encoder_is_not_computed(monkeypatch, tmp_path, tiny):
    # The config names a RoBERTa encoder: the compatibility layer refuses its tokenizer while
    # RadGraph is built (before any weights are read); medkit reports it, never crashes.
    _entry("radgraph")
    impl = importlib.import_module("radgraph.radgraph")
    model_dir = tmp_path / rm.RADGRAPH_MODEL_TYPE
    _rg_config(model_dir, tiny["roberta"])
    monkeypatch.setattr(impl, "CACHE_DIR", str(tmp_path))
    r = score_reports(["No effusion."], ["Small effusion."],
                      metrics=("radgraph_partial",))["radgraph_partial"]
    assert r.value is None
    assert r.status.startswith("not computed: needs package radgraph==0.1.18")
    assert "loading failed: TypeError" in r.status and "BERT tokenizers only" in r.status


def test_a_backend_failure_is_cut_at_a_word_for_its_footnote():
    """A hub error's first line runs on for sentences; the footnote ended "Please check yo)"."""
    from medkit.eval.report_metrics import _failure

    long = ("Cannot download the file An error happened while trying to locate the file on the Hub and we "
            "cannot find the requested files in the local cache. Please check your connection and try again")
    text = str(_failure("loading", "needs package radgraph==0.1.18", Exception(long)))
    assert text.startswith("needs package radgraph==0.1.18 (loading failed: Exception: Cannot download")
    assert text.endswith(" …)") and "Please check …" in text  # cut between words, marked
    assert str(_failure("loading", "needs X", Exception("short"))) == "needs X (loading failed: Exception: short)"
