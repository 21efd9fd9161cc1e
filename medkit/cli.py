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
    return cmd


def cmd_train(args: argparse.Namespace) -> int:
    from medkit.data.synthetic import generate_corpus
    from medkit.training.deepspeed_setup import cpu_environment

    cmd = train_command(args)  # validates the stage before any work
    if not (Path(args.corpus) / "manifest.json").is_file():
        generate_corpus(args.corpus, seed=0)
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, env=cpu_environment()).returncode


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
    p.set_defaults(func=cmd_train)

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
