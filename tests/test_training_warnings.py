"""Notebook 02's executed copy printed a transformers FutureWarning (peft reading the deprecated
``is_gradient_checkpointing``), DeepSpeed's accelerator auto-detection warning and transformers' use_cache
notice; each is fixed where medkit triggers it."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from medkit.chat import load_tokenizer
from medkit.model.build import build_tiny_model
from medkit.profiles import load_profile
from medkit.training.ablation import add_lora, load_ablation_config, peft_reads_deprecated_alias, start_checkpoint
from medkit.training.ablation_run import PhaseJob, phase_model
from medkit.training.deepspeed_setup import DS_ACCELERATOR, name_cpu_accelerator

# DeepSpeed: "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
DS_CPU_WARNING = "unable to detect it"


def tiny_model():
    return build_tiny_model(load_profile("tiny"), load_tokenizer("tiny"))


def test_add_lora_raises_no_future_warning():
    model = tiny_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(model, load_ablation_config("tiny").lora)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]


def test_the_peft_filter_is_narrow():
    """Only the alias warning from transformers' modeling_utils is ignored; any other FutureWarning shows."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with peft_reads_deprecated_alias():
            warnings.warn("something else is deprecated", FutureWarning)
            warnings.warn("`is_gradient_checkpointing` is deprecated (raised from a test module)", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated",
                                                "`is_gradient_checkpointing` is deprecated (raised from a test module)"]


def test_name_cpu_accelerator_sets_cpu_only_without_gpus(monkeypatch):
    monkeypatch.delenv(DS_ACCELERATOR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    name_cpu_accelerator()
    assert DS_ACCELERATOR not in os.environ  # GPUs: DeepSpeed detects CUDA itself
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    name_cpu_accelerator()
    assert os.environ[DS_ACCELERATOR] == "cpu"
    monkeypatch.setenv(DS_ACCELERATOR, "xpu")
    name_cpu_accelerator()
    assert os.environ[DS_ACCELERATOR] == "xpu"  # an explicit choice is kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="the auto-detection warning is a CPU-only one")
def test_deepspeed_imported_after_name_cpu_accelerator_does_not_warn():
    env = {k: v for k, v in os.environ.items() if k != DS_ACCELERATOR}
    code = ("from medkit.training.deepspeed_setup import name_cpu_accelerator\n"
            "name_cpu_accelerator()\n"
            "import deepspeed.accelerator as a\n"
            "print(a.get_accelerator().device_name())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("cpu")
    assert DS_CPU_WARNING not in done.stdout + done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the auto-detection warning is a CPU-only one")
def test_composing_a_stage_start_does_not_print_the_deepspeed_warning(tmp_path):
    """Notebook 03 printed DeepSpeed's auto-detection warning: composing the first stage's start saves a
    model, and save_pretrained imports deepspeed. The stand-ins are replaced by a fresh toy model here
    (training them is another test's business); the stage's own preparation is what runs."""
    from medkit.data.synthetic import generate_corpus

    generate_corpus(tmp_path / "corpus", seed=0, sizes={"caption": 10})
    env = {k: v for k, v in os.environ.items() if k != DS_ACCELERATOR}
    code = ("import medkit.training.standins as standins\n"
            "from medkit.model.build import build_tiny_model\n"
            "standins.compose_tiny = lambda profile, tokenizer, corpus: build_tiny_model(profile, tokenizer)\n"
            "from medkit.training.launch import prepare_stage\n"
            f"prepare_stage('pretrain', profile='tiny', out={str(tmp_path / 'out')!r}, "
            f"corpus={str(tmp_path / 'corpus')!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "init" / "model" / "config.json").is_file()  # the save that imports deepspeed ran
    assert DS_CPU_WARNING not in done.stdout + done.stderr


def test_loading_a_checkpoint_s_tokenizer_does_not_warn_about_its_model_type(tmp_path):
    """The evaluation notebooks printed transformers' "You are using a model of type `medgpt_oss` to
    instantiate a model of type ``": AutoTokenizer reads the checkpoint's config.json before anything had
    registered the type with AutoConfig."""
    from medkit.model.configuration import MedGPTOssConfig

    MedGPTOssConfig().save_pretrained(tmp_path)
    load_tokenizer("tiny").save_pretrained(tmp_path)
    code = ("import medkit.eval.adapters\n"  # what the evaluation imports before it loads the tokenizer
            "from medkit.chat import load_tokenizer\n"
            f"load_tokenizer({str(tmp_path)!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "to instantiate a model of type" not in done.stdout + done.stderr


def test_ablation_phase_model_trains_without_kv_cache(tmp_path, monkeypatch):
    """With gradient checkpointing on, the phase's model has use_cache off, so transformers does not switch
    it off (and log it) on the first training step."""
    import transformers.utils.generic as generic

    model = tiny_model()
    model.save_pretrained(start_checkpoint(tmp_path, "clip"))
    from dataclasses import replace

    # on, as paper.yaml has it (the tiny config trains without: recomputing is a quarter of a toy step)
    config = replace(load_ablation_config("tiny"), gradient_checkpointing=True)
    job = PhaseJob("projector_pretraining", "tiny", "clip", tmp_path / "config.yaml", tmp_path, tmp_path)
    trained = phase_model(job, config, load_profile("tiny"))
    assert trained.model.language_model.config.use_cache is False
    logged = []  # warning_once, unlike the logger, is not deduplicated across tests here
    monkeypatch.setattr(generic.logger, "warning_once", lambda *args, **kwargs: logged.append(str(args[0])))
    trained.gradient_checkpointing_enable()
    trained.train()
    ids = torch.randint(0, 200, (2, 16))
    trained(input_ids=ids, labels=ids).loss.backward()
    assert not [m for m in logged if "use_cache=True" in m]
    trained.model.language_model.config.use_cache = True  # control: the notice this test would see
    trained(input_ids=ids, labels=ids)
    assert [m for m in logged if "use_cache=True" in m]
