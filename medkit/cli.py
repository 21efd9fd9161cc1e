"""The ``medkit`` command line: one sub-command per job, each a thin call into the library."""

from __future__ import annotations

import argparse
import sys

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
