"""Radiology report-generation metrics (MIMIC-CXR, paper Figure 2).

The paper reports three clinically grounded metrics for report generation:
RadGraph-F1 (at the ``partial`` reward level), RaTEScore and 1/RadCliQ-v1,
where 1/RadCliQ-v1 is the reciprocal of the *dataset mean* RadCliQ-v1
(paper footnote 2).  Lexical metrics (BLEU-2, BLEU-4, ROUGE-L) are computed
everywhere because they need no model weights.

Everything that needs no weights is implemented here in plain Python (numpy
is not even needed).  Model-backed parts are thin, lazily imported wrappers
around the reference packages:

=================  ==========================  ==================================
metric / feature   package (pin)               weights / model
=================  ==========================  ==================================
RadGraph graphs    ``radgraph==0.1.18``        ``RadGraph(model_type="radgraph-xl")``
                                               (the package default when
                                               ``model_type`` is None),
                                               HF repo StanfordAIMI/RRG_scorers
RaTEScore          ``RaTEScore==0.6.0``        NER ``Angelakeke/RaTE-NER-Deberta``,
                                               encoder ``FremyCompany/BioLORD-2023-C``,
                                               affinity matrix "long" (defaults)
BERTScore (RadCliQ) ``bert-score==0.3.13``     ``distilroberta-base`` (layer 5),
                                               ``rescale_with_baseline=True``,
                                               ``idf=False``, lang "en"
CheXbert s_emb     ``f1chexbert==0.0.2``       ``chexbert.pth`` (StanfordAIMI/RRG_scorers)
=================  ==========================  ==================================

When a backend package or its weights are absent, or the package fails while
loading or scoring, the result is
``MetricResult(name, value=None, status="not computed: needs ...")`` -- never a
number, never an exception.  Callers can instead pass precomputed RadGraph
annotations (``radgraph_annotations``) and precomputed per-report RadCliQ
component scores (``component_scores``), which makes every weight-free step
testable.  :data:`BACKENDS` names the module and entry point each wrapper
imports (the ``metrics`` extra pins the packages, and ``medspacy``, which
``RaTEScore`` imports without declaring it).

Backends under transformers 5 (the project pins ``transformers==5.23.0``):

* RadGraph: ``radgraph`` 0.1.18's vendored allennlp tokenizer wrapper and
  indexer call ``encode_plus`` and ``build_inputs_with_special_tokens``, which
  transformers 5 removed (``RadGraph(...)`` raised ``AttributeError`` right
  after its weights loaded).  While ``RadGraph(...)`` is built,
  :func:`_radgraph_compat` gives each tokenizer radgraph loads those two
  methods as transformers 4 defined them for BERT (``__call__`` on one text or
  pair; ``[CLS] ids [SEP]``), on the instances only; the ids, token types and
  offsets equal transformers 4's (golden values in the tests).  A non-BERT
  tokenizer is "not computed".
* RaTEScore: works (NER, sentence splitting by medspacy/PyRuSH, encoder).
  RaTEScore drops a report without a sentence of >= 3 characters, which
  misaligns its scores; when the count it returns differs from the number of
  reports the metric is not computed.
* BERTScore: ``bert-score`` 0.3.13 passes ``add_prefix_space=True`` to
  ``encode`` (ignored by transformers 5 tokenizers) and calls
  ``build_inputs_with_special_tokens`` for an empty report (removed).
  :func:`_bertscorer` reloads a RoBERTa/GPT-2 tokenizer with
  ``add_prefix_space=True`` and restores that method, which reproduces the
  transformers 4 encodings the reference numbers were computed with.
* CheXbert: ``f1chexbert`` 0.0.2 downloads ``chexbert.pth`` with
  ``hf_hub_download(..., force_filename=...)``, an argument huggingface_hub 1.x+
  does not have (its error is printed and swallowed); medkit fetches the file
  into the path f1chexbert reads first.  medkit's own s_emb code builds
  ``[CLS] ids [SEP]`` itself instead of the removed ``encode_plus``.

RadGraph reward levels
----------------------
Re-implemented from the definitions of ``radgraph.rewards`` (``radgraph``
0.1.18, Stanford-AIMI/radgraph, the ``F1RadGraph`` reward of Delbrouck et al.).
An annotation is the RadGraph dict ``{"entities": {id: {"tokens": str,
"label": str, "relations": [[relation_type, target_id], ...]}}}``.  Each level
turns every report into a *set* of keys (duplicates collapse) and scores the
hypothesis set against the reference set with F1 (precision = matched / |hyp
set|, recall = matched / |ref set|, each 0 if its set is empty, F1 = 0 if P+R
is 0):

* ``simple``   one key per entity: ``(tokens, label)``.
* ``partial``  entity without relations: ``(tokens, label)``; entity with at
  least one outgoing relation: ``(tokens, label, True)``.  I.e. an entity
  matches only if text, label and "has an outgoing relation" all agree.
* ``complete`` entity without relations: ``(tokens, label)``; entity with
  relations: one key per relation ``(tokens.lower(), label, relation_type,
  target_tokens.lower())`` (the target's *label* is not part of the key).

Tokens are compared case-sensitively except in the relation keys of
``complete`` (package behaviour, reproduced deliberately).

Empty-report policy (package behaviour): a pair whose hypothesis *or*
reference string has length 0 scores 0.0 at every level, and so does a pair
where either annotation has no entities.  These zeros count in the dataset
mean (mean over all N reports, like ``F1RadGraph``).

RadCliQ-v1
----------
Per report (Yu et al. 2023; rajpurkarlab/CXR-Report-Metric)::

    z_k = (x_k - mean_k) / scale_k          (StandardScaler)
    RadCliQ-v1 = sum_k coef_k * z_k + intercept

over the features, in this order, ``radgraph_combined`` (RadGraph entity F1
+ relation F1, halved, as CXR-Report-Metric's ``radgraph_evaluate_model``),
``bertscore`` (BERTScore F1), ``semb_score`` (cosine similarity of CheXbert
CLS embeddings) and ``bleu_score`` (sentence BLEU-2, see below).  Lower is
better.  The paper's 1/RadCliQ-v1 is ``1 / mean_i(RadCliQ-v1_i)`` -- the
reciprocal of the mean, not the mean of reciprocals.  See
:data:`RADCLIQ_V1` for the numbers and their provenance.

Lexical metrics
---------------
From the reference packages (core dependencies, so they run in every install):

* Tokenisation for BLEU (CXR-Report-Metric ``prep_reports``): lower-case, replace
  ``"."`` by ``" ."``, split on single spaces, drop empty strings.
* Sentence BLEU-n: nltk ``sentence_bleu`` with ``SmoothingFunction().method1``
  and uniform weights ``1/n``, the behaviour of ``fast_bleu.BLEU`` that the
  RadCliQ BLEU component ports (nltk without smoothing and sacrebleu differ).
  ``bleu2``/``bleu4`` report the mean of per-report scores (CXR-Report-Metric
  convention); the corpus-level BLEU (nltk ``corpus_bleu``, no smoothing) is in
  ``metadata["corpus_bleu"]``.
* ROUGE-L: ``rouge_score`` ``RougeScorer(["rougeL"], use_stemmer=False)``
  F-measure per report (its tokeniser: lower-case runs of ``[a-z0-9]``);
  dataset value = mean over reports.

tests/test_report_metrics.py checks both against worked examples; they replaced
hand-written versions after giving equal numbers on 3,004 report pairs.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import os
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medkit.hub import local_cache_unless_reachable

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "MetricResult",
    "RADCLIQ_V1",
    "RadCliQCoefficients",
    "bleu_tokenize",
    "corpus_bleu",
    "load_radcliq_coefficients",
    "radcliq_v1_scores",
    "radgraph_combined_f1",
    "radgraph_reward",
    "radgraph_rewards",
    "reciprocal_of_mean",
    "rouge_l",
    "score_reports",
    "sentence_bleu",
]

DEFAULT_METRICS = ("bleu2", "bleu4", "rougeL", "radgraph_partial", "ratescore",
                   "radcliq_v1_inv")
ALL_METRICS = DEFAULT_METRICS + ("radgraph_simple", "radgraph_complete",
                                 "radcliq_v1")

# Backend identities recorded in result metadata.
RADGRAPH_PACKAGE = "radgraph==0.1.18"
RADGRAPH_MODEL_TYPE = "radgraph-xl"  # radgraph.RadGraph default for model_type=None
RATESCORE_PACKAGE = "RaTEScore==0.6.0"
RATESCORE_MODELS = {"bert_model": "Angelakeke/RaTE-NER-Deberta",
                    "eval_model": "FremyCompany/BioLORD-2023-C",
                    "affinity_matrix": "long"}
BERTSCORE_PACKAGE = "bert-score==0.3.13"
BERTSCORE_OPTIONS = {"model_type": "distilroberta-base", "lang": "en",
                     "rescale_with_baseline": True, "idf": False}
CHEXBERT_PACKAGE = "f1chexbert==0.0.2"
WEIGHTS_REPO = "StanfordAIMI/RRG_scorers"

NOT_COMPUTED = "not computed"
OK = "ok"


# --------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricResult:
    """One dataset-level metric.

    ``value`` is None whenever ``status`` is not ``"ok"``.  ``per_report``
    holds the per-report quantity whose mean (or, for ``radcliq_v1_inv``,
    reciprocal of the mean -- see ``metadata["aggregate"]``) gives ``value``;
    resample it for bootstrap CIs.
    """

    name: str
    value: float | None
    status: str = OK
    per_report: tuple[float, ...] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def computed(self) -> bool:
        return self.status == OK and self.value is not None


def _not_computed(name: str, needs: str, **metadata: Any) -> MetricResult:
    return MetricResult(name, None, f"{NOT_COMPUTED}: needs {needs}",
                        None, dict(metadata))


def _mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("cannot average zero reports")
    return math.fsum(values) / len(values)


def reciprocal_of_mean(values: Sequence[float]) -> float:
    """``1 / mean(values)`` (paper footnote 2); not ``mean(1 / v)``.

    Raises ValueError if the mean is not strictly positive (the reciprocal of
    a lower-is-better score is only order-reversing for positive values).
    """
    m = _mean(list(values))
    if not m > 0:
        raise ValueError(f"mean is {m!r}; its reciprocal is undefined or not "
                         "order-reversing")
    return 1.0 / m


# --------------------------------------------------------------------------
# RadGraph rewards from entity graphs
# --------------------------------------------------------------------------
def _entities(annotation: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(annotation, Mapping):
        raise ValueError(f"RadGraph annotation must be a mapping, got "
                         f"{type(annotation).__name__}")
    ents = annotation.get("entities", {})
    if not isinstance(ents, Mapping):
        raise ValueError("RadGraph annotation 'entities' must be a mapping")
    return ents


def _keys(annotation: Mapping[str, Any], level: str) -> set:
    ents = _entities(annotation)
    keys: set = set()
    for ent in ents.values():
        tokens, label, rels = ent["tokens"], ent["label"], ent.get("relations") or []
        if not rels or level == "simple":
            keys.add((tokens, label))
        elif level == "partial":
            keys.add((tokens, label, True))
        else:  # complete: one key per outgoing relation, lower-cased text
            for rel_type, target in rels:
                keys.add((tokens.lower(), label, rel_type,
                          ents[str(target)]["tokens"].lower()))
    return keys


def _set_f1(hyp: set, ref: set) -> float:
    matched = len(hyp & ref)
    p = matched / len(hyp) if hyp else 0.0
    r = matched / len(ref) if ref else 0.0
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


_LEVELS = ("simple", "partial", "complete")


def radgraph_reward(hypothesis: Mapping[str, Any], reference: Mapping[str, Any],
                    level: str = "partial") -> float:
    """RadGraph-F1 reward of one report pair at ``level`` (module docstring)."""
    if level not in _LEVELS:
        raise ValueError(f"unknown RadGraph reward level {level!r}; "
                         f"expected one of {_LEVELS}")
    if not _entities(hypothesis) or not _entities(reference):
        return 0.0
    return _set_f1(_keys(hypothesis, level), _keys(reference, level))


def radgraph_rewards(hypothesis: Mapping[str, Any],
                     reference: Mapping[str, Any]) -> dict[str, float]:
    """All three reward levels for one pair."""
    return {lvl: radgraph_reward(hypothesis, reference, lvl) for lvl in _LEVELS}


def radgraph_combined_f1(hypothesis: Mapping[str, Any],
                         reference: Mapping[str, Any]) -> float:
    """RadCliQ's ``radgraph_combined`` feature for one pair.

    (entity F1 + relation F1) / 2 as in CXR-Report-Metric
    ``radgraph_evaluate_model``: entities are ``(tokens, label)`` keys,
    relations ``((src tokens, src label), (tgt tokens, tgt label), type)``
    keys, both as sets; an empty set on either side gives F1 0 (so two
    relation-free reports get relation F1 0, as in the reference code).
    """
    def ent_set(a):
        return {(e["tokens"], e["label"]) for e in _entities(a).values()}

    def rel_set(a):
        ents = _entities(a)
        out = set()
        for e in ents.values():
            for rel_type, target in e.get("relations") or []:
                t = ents[str(target)]
                out.add(((e["tokens"], e["label"]), (t["tokens"], t["label"]),
                         rel_type))
        return out

    return (_set_f1(ent_set(hypothesis), ent_set(reference))
            + _set_f1(rel_set(hypothesis), rel_set(reference))) / 2


# --------------------------------------------------------------------------
# Lexical metrics
# --------------------------------------------------------------------------
def bleu_tokenize(text: str) -> list[str]:
    """CXR-Report-Metric ``prep_reports`` tokenisation (see module docstring)."""
    return [t for t in str(text).lower().replace(".", " .").split(" ") if t != ""]


def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]],
                  max_n: int = 2) -> float:
    """nltk ``sentence_bleu`` with uniform weights ``1/max_n`` and smoothing method 1 on token lists:
    the ``fast_bleu`` score CXR-Report-Metric's RadCliQ BLEU component ports."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

    if max_n < 1:
        raise ValueError("max_n must be >= 1")
    if isinstance(hypothesis, str) or any(isinstance(r, str) for r in references):
        raise ValueError("sentence_bleu takes token lists; use bleu_tokenize")
    if not references:
        raise ValueError("need at least one reference")
    return float(nltk_sentence_bleu(list(references), list(hypothesis), weights=(1 / max_n,) * max_n,
                                    smoothing_function=SmoothingFunction().method1))


def corpus_bleu(hypotheses: Sequence[Sequence[str]],
                references: Sequence[Sequence[Sequence[str]]],
                max_n: int = 4) -> float:
    """nltk ``corpus_bleu`` (micro-averaged, no smoothing: a zero n-gram precision gives a score of
    about 1e-77, which nltk warns of; the warning is silenced here because the value says it)."""
    import warnings

    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    if len(hypotheses) != len(references):
        raise ValueError("hypotheses and references differ in length")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(nltk_corpus_bleu([list(r) for r in references], [list(h) for h in hypotheses],
                                      weights=(1 / max_n,) * max_n))


@functools.cache
def _rouge_l_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 of one pair from ``rouge_score`` (``RougeScorer(["rougeL"], use_stemmer=False)``)."""
    return float(_rouge_l_scorer().score(str(reference), str(hypothesis))["rougeL"].fmeasure)


# --------------------------------------------------------------------------
# RadCliQ-v1
# --------------------------------------------------------------------------
RADCLIQ_FEATURES = ("radgraph_combined", "bertscore", "semb_score", "bleu_score")


@dataclass(frozen=True)
class RadCliQCoefficients:
    """StandardScaler statistics + linear model of a RadCliQ version."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    source: str = ""

    def __post_init__(self):
        k = len(self.features)
        if not (len(self.mean) == len(self.scale) == len(self.coef) == k):
            raise ValueError("RadCliQ coefficients: features, mean, scale and "
                             "coef must have the same length")
        if any(not s > 0 for s in self.scale):
            raise ValueError("RadCliQ coefficients: scale must be positive")

    def predict(self, row: Mapping[str, float]) -> float:
        return math.fsum(c * (row[f] - m) / s for f, m, s, c in
                         zip(self.features, self.mean, self.scale, self.coef)
                         ) + self.intercept


# RadCliQ-v1 as fitted by Yu et al. (2023) and shipped as the pickled
# ``CompositeMetric(scaler, coefs)`` object ``CXRMetric/radcliq-v1.pkl`` in
# rajpurkarlab/CXR-Report-Metric (binary; not readable here).  The numbers
# below are the values transcribed from that pickle by RadEval
# (jbdel/RadEval, ``RadCliQ`` ``CompositeMetric``: "learnt parameters,
# inferred from .../CXR-Report-Metric/.../run_eval.py#L219"); the same values
# appear in several downstream copies.  StandardScaler n_samples_seen_=160.
# They were NOT verified against the pickle itself: pass your own file to
# ``load_radcliq_coefficients`` to override.
RADCLIQ_V1 = RadCliQCoefficients(
    features=RADCLIQ_FEATURES,
    mean=(0.53792312, 0.61757256, 0.76479421, 0.44738335),
    scale=(0.30282584, 0.22430938, 0.25394391, 0.29892717),
    coef=(-3.77083683e-01, -3.70300100e-01, -2.52616218e-01, 4.31504841e-12),
    intercept=2.46655256e-10,
    source=("rajpurkarlab/CXR-Report-Metric CXRMetric/radcliq-v1.pkl, values as "
            "transcribed in jbdel/RadEval (RadCliQ CompositeMetric)"),
)


def load_radcliq_coefficients(path: str | os.PathLike) -> RadCliQCoefficients:
    """Load coefficients from JSON ``{"features", "mean", "scale", "coef",
    "intercept", "source"?}``."""
    data = json.loads(Path(path).read_text())
    try:
        return RadCliQCoefficients(
            features=tuple(data["features"]), mean=tuple(map(float, data["mean"])),
            scale=tuple(map(float, data["scale"])),
            coef=tuple(map(float, data["coef"])),
            intercept=float(data["intercept"]),
            source=str(data.get("source", str(path))))
    except KeyError as exc:
        raise ValueError(f"{path}: missing RadCliQ coefficient field {exc}") from None


def radcliq_v1_scores(components: Mapping[str, Sequence[float]],
                      coefficients: RadCliQCoefficients = RADCLIQ_V1) -> list[float]:
    """Per-report RadCliQ from per-report component columns."""
    missing = [f for f in coefficients.features if f not in components]
    if missing:
        raise ValueError(f"RadCliQ components missing: {missing}")
    n = {len(components[f]) for f in coefficients.features}
    if len(n) != 1:
        raise ValueError("RadCliQ component columns differ in length")
    (n,) = n
    out = []
    for i in range(n):
        row = {}
        for f in coefficients.features:
            v = components[f][i]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"component {f!r} at index {i} is not a finite number: {v!r}")
            row[f] = float(v)
        out.append(coefficients.predict(row))
    return out


# --------------------------------------------------------------------------
# Model backends (lazy; never produce a number without the real model)
# --------------------------------------------------------------------------
class BackendUnavailable(RuntimeError):
    """A backend package or its weights could not be loaded, or it failed."""


# metric backend -> (module imported, entry point used, package pin).  The
# ``metrics`` extra of pyproject.toml pins exactly these packages (tested).
BACKENDS = {
    "radgraph": ("radgraph", "RadGraph", RADGRAPH_PACKAGE),
    "ratescore": ("RaTEScore", "RaTEScore", RATESCORE_PACKAGE),
    "bertscore": ("bert_score", "BERTScorer", BERTSCORE_PACKAGE),
    "chexbert": ("f1chexbert", "F1CheXbert", CHEXBERT_PACKAGE),
}


def _failure(what: str, needs: str, exc: BaseException) -> BackendUnavailable:
    # the first line, cut at a word (hub errors run on for several sentences): a footnote, not a traceback
    msg = textwrap.shorten(str(exc).splitlines()[0], 160, placeholder=" …") if str(exc).strip() else ""
    return BackendUnavailable(f"{needs} ({what} failed: {type(exc).__name__}: {msg})")


def _import(module: str, needs: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError (e.g. RaTEScore without medspacy), broken install
        raise _failure(f"import {module!r}", needs, exc) from exc


def _entry_point(backend: str, needs: str):
    module, attr, _ = BACKENDS[backend]
    mod = _import(module, needs)
    try:
        return getattr(mod, attr)
    except AttributeError as exc:
        raise BackendUnavailable(f"{needs} ({module}.{attr} missing)") from exc


def _load(factory: Callable[[], Any], needs: str):
    try:
        with local_cache_unless_reachable():  # a missing file fails at once, not after retries
            return factory()
    except Exception as exc:  # offline / weights absent / incompatible install
        raise _failure("loading", needs, exc) from exc


def _run(fn: Callable[[], Any], needs: str):
    """Scoring with a loaded backend; an incompatible install fails here too."""
    try:
        with local_cache_unless_reachable():  # some backends fetch files on first use
            return fn()
    except BackendUnavailable:
        raise
    except Exception as exc:
        raise _failure("scoring", needs, exc) from exc


def _radgraph_tokenizer_compat(tok):
    """Give one tokenizer radgraph built the transformers 4 methods it calls.

    radgraph 0.1.18's vendored allennlp calls ``tok.encode_plus`` (a single
    text or the pair ``("a", "b")``, with ``add_special_tokens``,
    ``return_token_type_ids``, ``return_attention_mask``,
    ``return_offsets_mapping``, ``max_length``/``stride``/``truncation`` and
    ``return_tensors=None``) and, for each ``max_length`` segment its indexer
    folds a long report into, ``tok.build_inputs_with_special_tokens(ids)``;
    transformers 5 removed both.  The rest it uses still exists (``encode``,
    ``tokenize``, ``convert_ids_to_tokens``, ``num_special_tokens_to_add``,
    ``get_vocab``, ``is_fast``, ``pad_token_id``).  Only BERT (wordpiece)
    tokenizers are handled, because transformers 4's
    ``build_inputs_with_special_tokens`` differed per class: the DyGIE++
    RadGraph models are expected to be BERT-based, but their encoder is named
    in the config inside the weights archive, so any other class (e.g.
    ModernBERT's, for ``modern-radgraph-xl``) raises here and the metric is
    not computed.
    Transformers 4 (methods present): nothing to do.
    """
    if hasattr(tok, "encode_plus"):
        return tok
    from transformers import BertTokenizer
    if not isinstance(tok, BertTokenizer):
        raise TypeError(f"medkit's transformers 5 compatibility for radgraph handles BERT "
                        f"tokenizers only, not {type(tok).__name__}")

    def encode_plus(text, text_pair=None, **kwargs):
        # transformers 4 encoded one text (or pair) exactly as __call__ still does, and
        # treated an empty text_pair as no pair.
        return tok(text, text_pair or None, **kwargs)

    def build_inputs_with_special_tokens(token_ids_0, token_ids_1=None):
        # transformers 4 BertTokenizerFast: [CLS] A [SEP] or [CLS] A [SEP] B [SEP]
        out = [tok.cls_token_id] + token_ids_0 + [tok.sep_token_id]
        if token_ids_1 is not None:
            out += token_ids_1 + [tok.sep_token_id]
        return out

    tok.encode_plus = encode_plus
    tok.build_inputs_with_special_tokens = build_inputs_with_special_tokens
    return tok


@contextlib.contextmanager
def _radgraph_compat():
    """While ``RadGraph(...)`` is built, pass each tokenizer radgraph loads through
    :func:`_radgraph_tokenizer_compat`.

    All of radgraph's tokenizers come from its own
    ``cached_transformers.get_tokenizer`` while the model is constructed, and
    its tokenizer wrapper and indexer keep them for scoring, so patching that
    one function for the construction is enough; transformers is not touched.
    A ``radgraph`` without that module (not 0.1.18's layout, or a test
    stand-in) is left as is.
    """
    try:
        ct = importlib.import_module("radgraph.allennlp.common.cached_transformers")
    except ImportError:
        ct = None
    if ct is None:
        yield
        return
    original = ct.get_tokenizer

    def get_tokenizer(model_name, **kwargs):
        return _radgraph_tokenizer_compat(original(model_name, **kwargs))

    ct.get_tokenizer = get_tokenizer
    try:
        yield
    finally:
        ct.get_tokenizer = original


def _radgraph_annotate(texts: Sequence[str], model_type: str) -> list[dict]:
    needs = (f"package {RADGRAPH_PACKAGE} and RadGraph weights "
             f"model_type={model_type!r} ({WEIGHTS_REPO})")
    RadGraph = _entry_point("radgraph", needs)

    def make():
        with _radgraph_compat():
            return RadGraph(model_type=model_type)

    model = _load(make, needs)
    if not texts:
        return []
    out = _run(lambda: model(list(texts)), needs)
    return [out.get(str(i), {"entities": {}}) for i in range(len(texts))]


def _ratescore(hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
    needs = (f"package {RATESCORE_PACKAGE} and weights "
             f"{RATESCORE_MODELS['bert_model']} + {RATESCORE_MODELS['eval_model']}")
    RaTEScore = _entry_point("ratescore", needs)
    try:
        import torch
        use_gpu = torch.cuda.is_available()
    except Exception:
        use_gpu = False
    scorer = _load(lambda: RaTEScore(use_gpu=use_gpu, **RATESCORE_MODELS), needs)
    scores = _run(lambda: [float(s) for s in scorer.compute_score(list(hyps), list(refs))],
                  needs)
    if len(scores) != len(hyps):
        # RaTEScore's sentence splitter drops a report without a sentence of
        # >= 3 characters; its scores are then paired with the wrong reports.
        raise BackendUnavailable(
            f"{needs} (RaTEScore returned {len(scores)} scores for {len(hyps)} "
            "reports: it drops a report without a sentence of >= 3 characters, "
            "e.g. an empty one)")
    return scores


def _bertscore_compat(scorer) -> None:
    """Make ``bert-score`` 0.3.13 encode as it did under transformers 4.

    Under transformers 5, ``sent_encode``'s ``add_prefix_space=True`` is
    silently ignored by RoBERTa/GPT-2 tokenizers (the first word loses its
    leading-space BPE form, which changes the score) and the
    ``build_inputs_with_special_tokens([])`` it calls for an empty report no
    longer exists.  Transformers 4 (method present): nothing to do.
    """
    tok = scorer._tokenizer  # bert-score 0.3.13 keeps its tokenizer here
    if hasattr(tok, "build_inputs_with_special_tokens"):
        return
    from bert_score import utils as bs_utils
    from transformers import AutoTokenizer
    if isinstance(tok, (bs_utils.GPT2Tokenizer, bs_utils.RobertaTokenizer)):
        tok = AutoTokenizer.from_pretrained(scorer.model_type, add_prefix_space=True)

    def build_inputs_with_special_tokens(token_ids_0, token_ids_1=None):
        if token_ids_0 or token_ids_1:  # bert-score only asks for the empty case
            raise NotImplementedError("only the empty sequence is supported")
        return tok.encode("", add_special_tokens=True)

    tok.build_inputs_with_special_tokens = build_inputs_with_special_tokens
    scorer._tokenizer = tok


def _bertscorer(needs: str):
    BERTScorer = _entry_point("bertscore", needs)

    def make():
        scorer = BERTScorer(batch_size=64, **BERTSCORE_OPTIONS)
        _bertscore_compat(scorer)
        return scorer

    return _load(make, needs)


def _bertscore(hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
    needs = (f"package {BERTSCORE_PACKAGE} and weights "
             f"{BERTSCORE_OPTIONS['model_type']}")
    scorer = _bertscorer(needs)
    # CXR-Report-Metric collapses runs of spaces before scoring.
    clean = lambda xs: [re.sub(r" +", " ", x) for x in xs]  # noqa: E731
    _, _, f1 = _run(lambda: scorer.score(clean(hyps), clean(refs)), needs)
    return [float(x) for x in f1]


CHEXBERT_CHECKPOINT = "chexbert.pth"


def _chexbert_checkpoint() -> Path:
    """Put ``chexbert.pth`` where ``f1chexbert`` 0.0.2 looks first.

    Its own downloader passes ``force_filename`` to ``hf_hub_download``, which
    huggingface_hub 1.x+ rejects (the error is printed and swallowed, then
    ``torch.load`` fails); fetch the file with the current API instead (a
    symlink into the hub cache, a copy where links are not possible).
    """
    impl = importlib.import_module("f1chexbert.f1chexbert")
    target = Path(impl.CACHE_DIR) / CHEXBERT_CHECKPOINT
    if target.exists():
        return target
    from huggingface_hub import hf_hub_download
    src = hf_hub_download(repo_id=WEIGHTS_REPO, filename=CHEXBERT_CHECKPOINT)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # dangling: the hub cache was cleaned
        target.unlink()
    try:
        target.symlink_to(Path(src).resolve())
    except OSError:
        import shutil
        tmp = target.with_name(target.name + ".partial")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    return target


def _chexbert_ids(tokenizer, text: str) -> list[int]:
    """CheXbert input ids of one report (f1chexbert ``tokenize`` rules).

    ``[CLS] wordpieces [SEP]``, i.e. transformers 4's ``encode_plus(tokens)``
    for BERT (removed in transformers 5); an empty report is ``[CLS] [SEP]``;
    more than 512 ids are cut to 511 plus ``[SEP]``.
    """
    text = re.sub(r"\s+", " ", text.replace("\n", " ")).strip()
    toks = tokenizer.tokenize(text)
    ids = ([tokenizer.cls_token_id] + tokenizer.convert_tokens_to_ids(toks)
           + [tokenizer.sep_token_id])
    if len(ids) > 512:
        ids = ids[:511] + [tokenizer.sep_token_id]
    return ids


def _chexbert_semb(hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Cosine similarity of CheXbert final-layer CLS embeddings (s_emb)."""
    needs = (f"package {CHEXBERT_PACKAGE} and CheXbert weights {CHEXBERT_CHECKPOINT} "
             f"({WEIGHTS_REPO})")
    F1CheXbert = _entry_point("chexbert", needs)

    def make():
        _chexbert_checkpoint()
        return F1CheXbert(device="cpu")

    labeler = _load(make, needs)
    import torch

    def embed(text: str):
        ids = _chexbert_ids(labeler.tokenizer, text)
        t = torch.tensor([ids], device=labeler.device)
        with torch.no_grad():
            hidden = labeler.model.bert(t, attention_mask=torch.ones_like(t))[0]
        return hidden[0, 0, :]

    def run():
        out = []
        for h, r in zip(hyps, refs):
            a, b = embed(r), embed(h)
            out.append(float((a * b).sum() / (a.norm() * b.norm())))
        return out

    return _run(run, needs)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------
def _validate(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    for nm, seq in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(seq, str) or not isinstance(seq, Sequence):
            raise ValueError(f"{nm} must be a sequence of strings, got "
                             f"{type(seq).__name__}")
        for i, x in enumerate(seq):
            if not isinstance(x, str):
                raise ValueError(f"{nm}[{i}] is not a string: {type(x).__name__}")
    if len(hypotheses) != len(references):
        raise ValueError(f"length mismatch: {len(hypotheses)} hypotheses vs "
                         f"{len(references)} references (first unpaired index "
                         f"{min(len(hypotheses), len(references))})")
    if not hypotheses:
        raise ValueError("no reports to score")


def _per_report_column(name: str, values: Any, n: int) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"component_scores[{name!r}] must be a sequence")
    if len(values) != n:
        raise ValueError(f"component_scores[{name!r}] has {len(values)} values "
                         f"for {n} reports (first unpaired index {min(len(values), n)})")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"component_scores[{name!r}][{i}] is not a finite "
                             f"number: {v!r}")
        out.append(float(v))
    return out


def _annotations(radgraph_annotations, n: int):
    if radgraph_annotations is None:
        return None
    try:
        hyp_a = radgraph_annotations["hypotheses"]
        ref_a = radgraph_annotations["references"]
    except (KeyError, TypeError):
        raise ValueError("radgraph_annotations must be a mapping with keys "
                         "'hypotheses' and 'references'") from None
    for nm, seq in (("hypotheses", hyp_a), ("references", ref_a)):
        if len(seq) != n:
            raise ValueError(f"radgraph_annotations[{nm!r}] has {len(seq)} entries "
                             f"for {n} reports (first unpaired index {min(len(seq), n)})")
        for i, a in enumerate(seq):
            if not isinstance(a, Mapping) or not isinstance(a.get("entities", {}), Mapping):
                raise ValueError(f"radgraph_annotations[{nm!r}][{i}] is not a "
                                 "RadGraph annotation mapping")
    return list(hyp_a), list(ref_a)


def score_reports(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    radgraph_annotations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    component_scores: Mapping[str, Sequence[float]] | None = None,
    radcliq_coefficients: RadCliQCoefficients | str | os.PathLike | None = None,
    radgraph_model_type: str = RADGRAPH_MODEL_TYPE,
) -> dict[str, MetricResult]:
    """Score generated reports against references.

    Args:
      hypotheses, references: paired report strings (same length, >= 1).
      metrics: names from :data:`ALL_METRICS`.
      radgraph_annotations: precomputed RadGraph graphs,
        ``{"hypotheses": [ann, ...], "references": [ann, ...]}`` aligned with
        the reports; when given, the RadGraph model is not used.
      component_scores: precomputed per-report RadCliQ inputs; keys among
        ``"bertscore"``, ``"semb_score"`` and (overriding medkit's own)
        ``"radgraph_combined"``, ``"bleu_score"``.  Also ``"ratescore"``
        (per-report RaTEScore from an external run).
      radcliq_coefficients: override :data:`RADCLIQ_V1` (object or JSON path).
      radgraph_model_type: RadGraph model when no annotations are given.

    Returns:
      ``{metric name: MetricResult}`` in the order requested.
    """
    _validate(hypotheses, references)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {ALL_METRICS}")
    n = len(hypotheses)
    comps = {k: _per_report_column(k, v, n) for k, v in (component_scores or {}).items()}
    bad = sorted(set(comps) - {"bertscore", "semb_score", "radgraph_combined",
                               "bleu_score", "ratescore"})
    if bad:
        raise ValueError(f"unknown component_scores keys {bad}")
    annotations = _annotations(radgraph_annotations, n)
    if radcliq_coefficients is None:
        coefficients = RADCLIQ_V1
    elif isinstance(radcliq_coefficients, RadCliQCoefficients):
        coefficients = radcliq_coefficients
    else:
        coefficients = load_radcliq_coefficients(radcliq_coefficients)

    results: dict[str, MetricResult] = {}
    cache: dict[str, Any] = {}

    hyp_tok = [bleu_tokenize(h) for h in hypotheses]
    ref_tok = [bleu_tokenize(r) for r in references]

    def bleu(k: int) -> MetricResult:
        per = [sentence_bleu(h, [r], max_n=k) for h, r in zip(hyp_tok, ref_tok)]
        return MetricResult(
            f"bleu{k}", _mean(per), OK, tuple(per),
            {"aggregate": "mean of per-report sentence BLEU",
             "definition": "fast_bleu / nltk sentence_bleu smoothing method1, "
                           "CXR-Report-Metric tokenisation",
             "corpus_bleu": corpus_bleu(hyp_tok, [[r] for r in ref_tok], max_n=k)})

    def graphs():
        """(hyp annotations, ref annotations, source) or raises BackendUnavailable."""
        if "graphs" not in cache:
            if annotations is not None:
                cache["graphs"] = (*annotations, "precomputed radgraph_annotations")
            else:
                idx = [i for i in range(n) if hypotheses[i] and references[i]]
                try:
                    got = _radgraph_annotate([hypotheses[i] for i in idx]
                                             + [references[i] for i in idx],
                                             radgraph_model_type)
                except BackendUnavailable as exc:
                    cache["graphs"] = exc
                else:
                    empty = {"entities": {}}
                    h, r = [empty] * n, [empty] * n
                    for j, i in enumerate(idx):
                        h[i], r[i] = got[j], got[len(idx) + j]
                    cache["graphs"] = (h, r, f"radgraph model_type={radgraph_model_type!r}")
        if isinstance(cache["graphs"], BackendUnavailable):
            raise cache["graphs"]
        return cache["graphs"]

    def radgraph_level(level: str) -> MetricResult:
        name = f"radgraph_{level}"
        try:
            h, r, src = graphs()
        except BackendUnavailable as exc:
            return _not_computed(name, str(exc), reward_level=level,
                                 model_type=radgraph_model_type)
        per = [0.0 if (len(hypotheses[i]) == 0 or len(references[i]) == 0)
               else radgraph_reward(h[i], r[i], level) for i in range(n)]
        return MetricResult(name, _mean(per), OK, tuple(per),
                            {"reward_level": level, "annotations": src,
                             "model_type": (radgraph_model_type if annotations is None
                                            else None),
                             "empty_policy": "pair with empty hypothesis or "
                                             "reference string, or no entities "
                                             "on either side, scores 0 and counts "
                                             "in the mean"})

    def component(name: str, fn: Callable[[], list[float]]) -> list[float]:
        if name in comps:
            return comps[name]
        if name not in cache:
            try:
                cache[name] = fn()
            except BackendUnavailable as exc:
                cache[name] = exc
        if isinstance(cache[name], BackendUnavailable):
            raise cache[name]
        return cache[name]

    def radcliq() -> tuple[list[float], dict] | str:
        needs = []
        cols: dict[str, list[float]] = {}
        providers = {
            "radgraph_combined": lambda: [
                0.0 if (len(hypotheses[i]) == 0 or len(references[i]) == 0)
                else radgraph_combined_f1(graphs()[0][i], graphs()[1][i])
                for i in range(n)],
            "bertscore": lambda: _bertscore(hypotheses, references),
            "semb_score": lambda: _chexbert_semb(hypotheses, references),
            "bleu_score": lambda: [sentence_bleu(h, [r], 2)
                                   for h, r in zip(hyp_tok, ref_tok)],
        }
        for f in coefficients.features:
            if f not in providers and f not in comps:
                needs.append(f"component_scores[{f!r}]")
                continue
            try:
                cols[f] = component(f, providers.get(f, lambda: []))
            except BackendUnavailable as exc:
                needs.append(f"{f}: {exc} or component_scores[{f!r}]")
        if needs:
            return "; ".join(needs)
        meta = {"coefficients_source": coefficients.source,
                "features": list(coefficients.features),
                "component_sources": {f: ("component_scores" if f in comps else "computed")
                                      for f in coefficients.features},
                "bertscore_options": BERTSCORE_OPTIONS,
                "radgraph": (graphs()[2] if "radgraph_combined" not in comps else None)}
        return radcliq_v1_scores(cols, coefficients), meta

    for m in metrics:
        if m == "bleu2":
            results[m] = bleu(2)
        elif m == "bleu4":
            results[m] = bleu(4)
        elif m == "rougeL":
            per = [rouge_l(h, r) for h, r in zip(hypotheses, references)]
            results[m] = MetricResult(m, _mean(per), OK, tuple(per),
                                      {"definition": "rouge_score rougeL fmeasure, "
                                                     "no stemming",
                                       "aggregate": "mean over reports"})
        elif m.startswith("radgraph_"):
            results[m] = radgraph_level(m.split("_", 1)[1])
        elif m == "ratescore":
            meta = {"package": RATESCORE_PACKAGE, **RATESCORE_MODELS}
            try:
                per = component("ratescore", lambda: _ratescore(hypotheses, references))
            except BackendUnavailable as exc:
                results[m] = _not_computed(m, str(exc) + " or component_scores['ratescore']",
                                           **meta)
            else:
                meta["source"] = "component_scores" if "ratescore" in comps else "computed"
                results[m] = MetricResult(m, _mean(per), OK, tuple(per), meta)
        elif m in ("radcliq_v1", "radcliq_v1_inv"):
            if "radcliq" not in cache:
                cache["radcliq"] = radcliq()
            got = cache["radcliq"]
            if isinstance(got, str):
                results[m] = _not_computed(m, f"RadCliQ-v1 components ({got})")
                continue
            per, meta = got
            mean = _mean(per)
            if m == "radcliq_v1":
                results[m] = MetricResult(m, mean, OK, tuple(per),
                                          {**meta, "aggregate": "mean of per-report "
                                                                "RadCliQ-v1 (lower is better)"})
            elif mean > 0:
                results[m] = MetricResult(
                    m, 1.0 / mean, OK, tuple(per),
                    {**meta, "mean_radcliq_v1": mean,
                     "aggregate": "1 / mean(per_report); per_report holds RadCliQ-v1, "
                                  "not reciprocals (bootstrap: resample, then 1/mean)"})
            else:
                results[m] = MetricResult(
                    m, None, f"{NOT_COMPUTED}: mean RadCliQ-v1 is {mean:.6g} <= 0, "
                             "its reciprocal is not a valid higher-is-better score",
                    tuple(per), {**meta, "mean_radcliq_v1": mean})
    return results
