"""The ``medkit`` command line: one sub-command per job, each a thin call into the library."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from medkit.config import ConfigError


def cmd_summary(args: argparse.Namespace) -> int:
    from medkit.model.summary import format_summary, meta_model
    from medkit.profiles import load_profile

    profile = load_profile(args.profile, encoder=args.encoder) if args.encoder else load_profile(args.profile)
    vocab = None
    if profile.is_tiny:
        from medkit.chat import load_tokenizer

        vocab = len(load_tokenizer(profile.model.tokenizer))
    print(format_summary(profile, meta_model(profile, vocab_size=vocab)))
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    from medkit.data.synthetic import generate_corpus

    manifest = generate_corpus(args.out, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote synthetic corpus (seed {args.seed}) to {args.out}")
    print(manifest)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from medkit.reproduce import reproduce

    reproduce(args.profile, run_dir=args.run_dir, steps=args.steps)
    return 0


def train_command(args: argparse.Namespace) -> list[str]:
    """The launcher command for one stage: torch's elastic launcher starting N ranks of stage_run.

    On a multi-node box the same module runs under the `deepspeed` launcher or torchrun with node flags.
    """
    from medkit.training.stages import load_stage

    stage = load_stage(args.stage, args.vision_schedule)
    out = Path(args.out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc),
           "-m", "medkit.training.stage_run", "--stage", stage.name, "--profile", args.profile,
           "--vision-schedule", args.vision_schedule, "--corpus", str(args.corpus), "--out", str(out / stage.name)]
    if stage.init_from:
        cmd += ["--previous", str(out / stage.init_from / "model")]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.save_steps:
        cmd += ["--save-steps", str(args.save_steps)]
    return cmd


def cmd_train(args: argparse.Namespace) -> int:
    from medkit.data.synthetic import generate_corpus
    from medkit.training.deepspeed_setup import cpu_environment

    cmd = train_command(args)  # validates the stage before any work
    if not (Path(args.corpus) / "manifest.json").is_file():
        generate_corpus(args.corpus, seed=0)
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, env=cpu_environment()).returncode


def cmd_plan(args: argparse.Namespace) -> int:
    from medkit.training.compute_plan import compute_plan, format_plan, load_hardware
    from medkit.training.stages import load_curriculum, load_stage

    hardware = load_hardware(args.hardware)
    stages = load_curriculum(args.vision_schedule) if args.stage == "all" else [load_stage(args.stage, args.vision_schedule)]
    for stage in stages:
        plan = compute_plan(stage, hardware, num_gpus=args.gpus, num_nodes=args.nodes, tokens=args.tokens,
                            mfu=args.mfu, profile=args.profile)
        print(format_plan(plan))
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from medkit.training.ablation import run_ablation

    run_ablation(args.profile, args.out, data_root=args.data_root, config=args.config, encoders=args.encoders)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medkit", description="MedGPT-OSS reproducibility kit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="parameter counts per part and visual tokens per encoder")
    p.add_argument("--profile", default="tiny", help="tiny, paper or a profile YAML file")
    p.add_argument("--encoder", help="override the profile's vision encoder")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("corpus", help="write the seeded synthetic corpus")
    p.add_argument("out", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("train", help="one curriculum stage through DeepSpeed ZeRO-3 on N ranks")
    p.add_argument("--stage", required=True, help="pretrain, midtrain or instruct")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--nproc", type=int, default=1, help="ranks on this machine (GPUs, or CPU processes)")
    p.add_argument("--vision-schedule", default="table2", choices=["table2", "text"])
    p.add_argument("--corpus", default="runs/corpus", help="training data folder (tiny: the synthetic corpus)")
    p.add_argument("--out", default="runs/train", help="stage outputs go to OUT/<stage>/")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--save-steps", type=int, default=None, help="checkpoint interval; rerunning a killed stage resumes")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plan", help="per-GPU ZeRO-3 memory and GPU-hours of a stage on given hardware")
    p.add_argument("--stage", default="all", help="pretrain, midtrain, instruct or all")
    p.add_argument("--hardware", default="h100-sxm", help="a GPU of medkit/configs/hardware.yaml")
    p.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tokens", type=float, default=None, help="training tokens, for the FLOPs-based estimate")
    p.add_argument("--mfu", type=float, default=0.25, help="assumed model FLOPs utilisation for that estimate")
    p.add_argument("--profile", default="paper")
    p.add_argument("--vision-schedule", default="table2", choices=["table2", "text"])
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("ablation", help="the LoRA vision-encoder ablation of Figure 1")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--data-root", default=None, help="folder of the config's data files (tiny: generated corpus)")
    p.add_argument("--config", default=None, help="ablation YAML (default: the profile's shipped config)")
    p.add_argument("--encoders", nargs="+", default=None, help="a subset of the config's encoders")
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("reproduce", help="the main job on a profile (tiny: corpus -> train -> held-out loss)")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--run-dir", default=None, help="default: runs/<profile>-<timestamp>")
    p.add_argument("--steps", type=int, default=None, help="training steps (default from the profile's job)")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"medkit {args.command}: error: {e}", file=sys.stderr)
        return 2
