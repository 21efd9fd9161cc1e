"""The LoRA encoder ablation (Figure 1): the peft adapters on GptOss's expert weights, the phases in worker
processes, in this process and on 2 CPU ranks under DeepSpeed ZeRO-3, the dry run and its parameter counts,
with toy step counts."""

import json
from dataclasses import replace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from medkit.chat import load_tokenizer
from medkit.cli import main as cli_main
from medkit.config import ConfigError
from medkit.data.synthetic import generate_corpus
from medkit.model.build import build_tiny_model
from medkit.profiles import load_profile
from medkit.training.ablation import (EXPERT_ADAPTER, WORKER_LOG, WORKER_ROW, LocalWorkers, Phase, add_lora, ablation_dry_run, ablation_trainable_parameters,
                                      default_launch, load_ablation_config, parameter_counts, phase_batch,
                                      ranks_command, run_ablation, run_workers, text_only, trained_model)
from medkit.training.ablation_run import PhaseJob
from medkit.training.launch import Launch

SIZES = {"caption": 20, "report_long": 5, "report": 10, "vqa_mc": 20, "text_mc": 10, "reasoning": 5,
         "trial": 5, "impression": 5}
ENCODERS = ["clip", "biomedclip", "siglip", "medsiglip"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation_corpus")
    generate_corpus(root, seed=0, sizes=SIZES)
    return root


def toy_config(steps=2):
    config = load_ablation_config("tiny")
    short = dict(steps=steps, batch_size=4)
    return replace(
        config,
        projector_pretraining=replace(config.projector_pretraining, **short),
        lora_finetuning=replace(config.lora_finetuning, **short),
        evaluation=replace(config.evaluation, n_boot=200),
    )


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, corpus):
    """Every encoder, in single-threaded worker processes (the tiny default)."""
    out = tmp_path_factory.mktemp("ablation_run")
    return out, run_ablation("tiny", out, data_root=corpus, config=toy_config())


def row_of(results, encoder):
    return next(r for r in results["encoders"] if r["encoder"] == encoder)


def without_runtime(row):
    return {k: v for k, v in row.items() if k != "train_runtime_s"}


def tiny_model():
    return build_tiny_model(load_profile("tiny"), load_tokenizer("tiny"))


# ---- peft on GptOss's expert weights ---------------------------------------------------------------------

def test_peft_refuses_dropout_on_expert_weights_in_one_lora_config():
    """Why the run has two adapters: a LoraConfig's one dropout would reach peft's ParamWrapper."""
    lora = load_ablation_config("paper").lora
    single = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                        target_parameters=lora.target_parameters)
    with pytest.raises(ValueError, match="ParamWrapper does not work with lora_dropout != 0"):
        get_peft_model(tiny_model(), single)


def test_paper_lora_settings_train_adapters_and_projector_only_on_a_tiny_gpt_oss():
    """The paper config's LoRA (r 128, dropout 0.05, attention + expert weights) on the toy GptOss: peft
    accepts it, dropout sits on the attention adapters only, and a forward/backward reaches every trainable
    tensor - LoRA factors and the projector's trained copy, nothing else."""
    peft_model = add_lora(tiny_model(), load_ablation_config("paper").lora)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "multi_modal_projector.modules_to_save" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert any("self_attn.q_proj.lora_A.default" in n for n in trainable)
    assert any("mlp.experts" in n and "lora_A.experts" in n for n in trainable)  # expert weights adapted too
    assert all(torch.count_nonzero(p) == 0 for n, p in trainable.items() if "lora_B" in n)  # LoRA starts as identity
    layer = peft_model.base_model.model.model.language_model.layers[0]
    assert layer.self_attn.q_proj.lora_dropout["default"].p == 0.05
    assert isinstance(layer.mlp.experts.lora_dropout[EXPERT_ADAPTER], torch.nn.Identity)
    peft_model.train()
    ids = torch.randint(0, 200, (2, 16))
    peft_model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in trainable.values())
    assert not any(p.grad is not None for p in peft_model.parameters() if not p.requires_grad)


# ---- parameter counts and the dry run ----------------------------------------------------------------------

def test_meta_model_counts_equal_the_real_tiny_model():
    config = load_ablation_config("tiny")
    counts = ablation_trainable_parameters(config, load_profile("tiny", encoder="siglip"))
    model = build_tiny_model(load_profile("tiny", encoder="siglip"), load_tokenizer("tiny"))
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    trainable, _ = parameter_counts(add_lora(model, config.lora))
    assert counts == {"projector_pretraining": projector, "lora_finetuning": trainable}


def test_paper_lora_count_is_the_arithmetic_of_gpt_oss_20b_shapes():
    """r x (in + out) per attention projection and r x experts x (in + out) per expert weight, 24 layers."""
    lora = load_ablation_config("paper").lora
    t = load_profile("paper").model.text_config
    hidden, heads, kv, head_dim, experts = (t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"],
                                            t["head_dim"], t["num_local_experts"])
    attention = (hidden + heads * head_dim) * 2 + (hidden + kv * head_dim) * 2  # q, o; k, v
    expert_weights = experts * ((hidden + 2 * t["intermediate_size"]) + (t["intermediate_size"] + hidden))
    per_layer = lora.r * (attention + expert_weights)
    counts = ablation_trainable_parameters(load_ablation_config("paper"), load_profile("paper", encoder="clip"))
    assert counts["lora_finetuning"] - counts["projector_pretraining"] == t["num_hidden_layers"] * per_layer
    assert 1.47e9 < t["num_hidden_layers"] * per_layer < 1.49e9  # the 1.48 B


def test_dry_run_of_the_paper_profile_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["ablation", "--profile", "paper", "--nproc", "8", "--encoders", "clip", "--out", str(out),
                     "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "world size 8, DeepSpeed ZeRO-3; gradient checkpointing on" in text
    assert "16 samples per optimizer step = 2 per device x 8 rank(s) x accumulation 1" in text
    assert '"stage": 3' in text and '"train_micro_batch_size_per_gpu": 2' in text
    assert "clip        projector_pretraining     20,104,832   lora_finetuning  1,499,383,424" in text
    assert "NOT READY: the paper profile needs --data-root" in text
    assert "-m medkit.training.ablation_run --phase projector_pretraining" in text
    assert not out.exists()


def test_dry_run_counts_steps_of_epoch_phases_from_the_data(corpus):
    config = replace(toy_config(), projector_pretraining=Phase(data=["caption"], learning_rate=1e-3, batch_size=4))
    text = ablation_dry_run("tiny", config=config, data_root=corpus, encoders=["clip"])
    assert "1 epoch(s) of 16 samples = ~4 steps" in text  # the train split of 20 captions


def test_batch_split_over_ranks_and_clear_errors():
    phase = Phase(data=[], learning_rate=1e-3, batch_size=16)
    assert phase_batch(phase, 8, "p") == phase_batch(replace(phase, per_device_batch_size=2), 8, "p")
    assert phase_batch(replace(phase, per_device_batch_size=1), 8, "p").accumulation == 2
    with pytest.raises(ConfigError, match=r"batch_size 16 \(samples per optimizer step\) does not split over 3 ranks"):
        phase_batch(phase, 3, "lora_finetuning")
    with pytest.raises(ConfigError, match="per_device_batch_size 3 does not divide the 2 samples"):
        phase_batch(replace(phase, per_device_batch_size=3), 8, "lora_finetuning")
    with pytest.raises(ConfigError, match="several nodes runs through --launcher deepspeed"):
        ablation_dry_run("paper", launch=Launch(nproc=8, nnodes=2, master_addr="node0"))


def test_ranks_run_the_ablation_entry_point_under_either_launcher(tmp_path):
    job = PhaseJob("lora_finetuning", "paper", "siglip", tmp_path / "c.yaml", tmp_path / "data", tmp_path)
    torchrun = ranks_command(Launch(nproc=8), job)
    assert torchrun[torchrun.index("medkit.training.ablation_run") - 1] == "-m"
    deepspeed = ranks_command(Launch(launcher="deepspeed", nproc=8, nnodes=2, hostfile="hosts"), job)
    assert deepspeed[deepspeed.index("medkit.training.ablation_run") - 1] == "--module"
    for command in (torchrun, deepspeed):
        assert "medkit.training.stage_run" not in command and command[-len(job.arguments()):] == job.arguments()


# ---- end-to-end runs -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_every_encoder_trains_and_is_scored_on_the_same_items(toy_run):
    out, results = toy_run
    on_disk = json.loads((out / "results.json").read_text())
    assert [r["encoder"] for r in on_disk["encoders"]] == ENCODERS
    assert on_disk["seed"] == 0 and on_disk["profile"] == "tiny"
    for row in results["encoders"]:
        acc, loss = row["mc_accuracy"], row["heldout_loss"]
        assert acc["n"] == 4  # the eval split of 20 vqa_mc items, the same for every encoder
        assert acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"]
        assert acc["chance_rate"] == row_of(results, "clip")["mc_accuracy"]["chance_rate"] == 0.25  # 4 options each
        assert loss["ci_low"] <= loss["mean"] <= loss["ci_high"] and loss["mean"] > 0
        assert row["phase1_loss"]["steps"] == 2 and row["phase2_loss"]["steps"] == 2
        ids = [json.loads(line)["id"] for line in (out / row["encoder"] / "predictions.jsonl").open()]
        assert ids == [json.loads(line)["id"] for line in (out / "clip" / "predictions.jsonl").open()]
        assert (out / row["encoder"] / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / row["encoder"] / "adapter" / EXPERT_ADAPTER / "adapter_model.safetensors").is_file()
    assert results["encoders"][0]["trainable_parameters_phase2"] < results["encoders"][0]["total_parameters"]
    evaluated = trained_model(load_profile("tiny", encoder="clip"), out, toy_config().lora)
    assert evaluated.active_adapters == ["default", EXPERT_ADAPTER]  # both adapters in the scored model


@pytest.mark.slow
def test_an_encoder_alone_gives_the_results_it_gets_among_all(tmp_path, corpus, toy_run):
    """Same seed, same config: the encoder's row and predictions are bit-identical whether it runs alone
    or after the others (each encoder starts from its own checkpoint; the base LM is retrained the same)."""
    out, results = toy_run
    alone = run_ablation("tiny", tmp_path / "alone", data_root=corpus, config=toy_config(), encoders=["siglip"])
    assert without_runtime(alone["encoders"][0]) == without_runtime(row_of(results, "siglip"))
    assert (tmp_path / "alone/siglip/predictions.jsonl").read_bytes() == (out / "siglip/predictions.jsonl").read_bytes()


@pytest.mark.slow
def test_zero3_on_two_cpu_ranks_trains_lora_on_expert_weights_like_the_in_process_run(tmp_path, corpus, toy_run):
    """peft LoRA (attention + expert parameters) with gradient checkpointing under ZeRO-3 on 2 gloo ranks:
    the parameters are partitioned, the adapters gathered and saved, and the numbers are the in-process
    run's up to float reduction order."""
    _, results = toy_run
    out = tmp_path / "z3"
    zero3 = run_ablation("tiny", out, data_root=corpus, config=toy_config(), encoders=["siglip"],
                         launch=Launch(nproc=2, master_port=29547))
    row, reference = zero3["encoders"][0], row_of(results, "siglip")
    for phase in ("projector_pretraining", "lora_finetuning"):
        record = json.loads((out / "siglip" / phase / "phase.json").read_text())
        assert record["world_size"] == 2 and record["zero_stage"] == 3
    for key in ("phase1_loss", "phase2_loss", "heldout_loss"):
        for stat, value in reference[key].items():
            assert row[key][stat] == pytest.approx(value, rel=1e-5), (key, stat)
    assert row["mc_accuracy"]["n"] == reference["mc_accuracy"]["n"]  # greedy decoding may flip on a 1e-7 tie
    assert row["trainable_parameters_phase2"] == reference["trainable_parameters_phase2"]
    experts = load_file(out / "siglip" / "adapter" / EXPERT_ADAPTER / "adapter_model.safetensors")
    assert all(torch.count_nonzero(v) > 0 for k, v in experts.items() if "lora_B" in k)  # trained from zero


# ---- errors ----------------------------------------------------------------------------------------------------

def test_unknown_encoder_and_bad_config_are_clear_errors(tmp_path):
    bad = tmp_path / "ablation.yaml"
    bad.write_text((load_ablation_config.__globals__["CONFIG_DIR"] / "ablation" / "tiny.yaml").read_text()
                   .replace("encoders: [clip,", "encoders: [dinov2, clip,"))
    with pytest.raises(ConfigError, match="dinov2"):
        load_ablation_config(bad)
    bad.write_text("encoders: [clip]\nlr: 3\n")
    with pytest.raises(ConfigError, match="lr"):
        load_ablation_config(bad)
    with pytest.raises(ConfigError, match="not in the ablation config"):
        run_ablation("tiny", tmp_path / "x", data_root=tmp_path, config=toy_config(), encoders=["clip", "vit"])


def test_missing_data_file_names_the_path(tmp_path):
    config = toy_config()
    with pytest.raises(FileNotFoundError, match=r"nowhere.caption\.jsonl does not exist"):
        run_ablation("tiny", tmp_path / "run", data_root=tmp_path / "nowhere", config=config)
    assert not (tmp_path / "run" / "results.json").exists()


def test_text_only_drops_images_keeps_text(corpus):
    from medkit.data.schema import read_jsonl

    sample = next(s for s in read_jsonl(corpus / "vqa_mc.jsonl") if len(s.images) > 1)
    stripped = text_only(sample)
    assert stripped.images == [] and stripped.num_image_parts == 0
    assert [m["role"] for m in stripped.messages] == [m["role"] for m in sample.messages]


# ---- worker processes (the tiny default) -----------------------------------------------------------------------

def test_tiny_trains_in_single_threaded_workers_and_the_dry_run_says_so():
    where = default_launch(load_profile("tiny"))
    assert isinstance(where, LocalWorkers) and where.workers >= 1
    text = ablation_dry_run("tiny")
    assert "each in a worker process of 1 thread (no DeepSpeed)" in text
    assert "--worker" in text and f"OUT/<encoder>/{WORKER_LOG}" in text
    assert "evaluation   after training, in each encoder's worker, once its phases are done" in text
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        LocalWorkers(0)


def test_a_failed_worker_raises_with_the_end_of_its_log(tmp_path):
    """A worker that dies (here: an encoder the registry does not know) names its log and shows its end."""
    config = tmp_path / "ablation_config.yaml"
    config.write_text("encoders: [clip]\n")
    with pytest.raises(RuntimeError, match=r"(?s)ablation nosuch failed in its worker \(exit 1\).*worker\.log.*"
                                           r"unknown vision encoder 'nosuch'"):
        run_workers(LocalWorkers(2), ["nosuch"], "tiny", config, tmp_path, tmp_path / "run", None)
    assert (tmp_path / "run" / "nosuch" / WORKER_LOG).is_file()


def test_each_worker_evaluates_its_encoder_and_the_results_are_its_rows(toy_run):
    """The tiny workers score their own encoder (side by side, on their one thread): results.json holds
    exactly the rows they wrote."""
    out, results = toy_run
    for row in results["encoders"]:
        assert json.loads((out / row["encoder"] / WORKER_ROW).read_text()) == row


def test_a_worker_that_wrote_no_row_is_an_error_not_a_missing_bar(tmp_path):
    from medkit.training.ablation import worker_row

    (tmp_path / "clip").mkdir()
    with pytest.raises(RuntimeError, match=r"ablation clip: its worker exited without writing .*clip.result\.json"):
        worker_row(tmp_path, "clip")


@pytest.mark.slow
def test_workers_give_the_same_numbers_one_or_two_at_a_time(tmp_path, corpus, toy_run):
    """Each worker computes on one thread: how many run side by side changes no number."""
    out, results = toy_run
    one = run_ablation("tiny", tmp_path / "one", data_root=corpus, config=toy_config(), encoders=["clip", "siglip"],
                       launch=LocalWorkers(1))
    for name in ("clip", "siglip"):
        assert without_runtime(row_of(one, name)) == without_runtime(row_of(results, name))
        assert (tmp_path / "one" / name / "predictions.jsonl").read_bytes() == \
            (out / name / "predictions.jsonl").read_bytes()
