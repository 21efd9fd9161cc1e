"""The ``medkit`` command line: one sub-command per job, each a thin call into the library."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from medkit.config import ConfigError

DEFAULT_EVAL_OUT = "<latest run>/eval"  # the notebooks' run folder: runs/LATEST, else runs/notebooks
DEFAULT_ABLATION = "<latest run>/ablation/results.json"


def positive_int(text: str) -> int:
    """An argparse type: a count that must be at least 1 (refused before any data or model is read)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def result_name(text: str) -> str:
    """An argparse type: a result-folder name (results/<name>/), so no path separators or dot names."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits, '.', '_' and '-' (a folder name)")
    return text


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


def train_command(args: argparse.Namespace, build=None) -> list[str] | str:
    """The launcher command of ``medkit train`` (validating the stage, the launch and the batch split), or
    what ``build`` makes of the same settings (``stage_dry_run``: the dry-run report)."""
    from medkit.training.launch import Launch, StageOverrides, stage_command

    launch = Launch(launcher=args.launcher, nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
                    master_addr=args.master_addr, master_port=args.master_port, hostfile=args.hostfile)
    overrides = StageOverrides(per_device_batch_size=args.per_device_batch_size,
                               global_batch_size=args.global_batch_size, save_steps=args.save_steps,
                               save_minutes=args.save_minutes, save_model_only=args.save_model_only or None)
    return (build or stage_command)(args.stage, profile=args.profile, out=args.out, **train_data(args), launch=launch,
                                    vision_schedule=args.vision_schedule, max_steps=args.max_steps, overrides=overrides)


def train_data(args: argparse.Namespace) -> dict:
    """The synthetic corpus (default), or the Table 1 mixture under --data-root."""
    corpus = None if args.data_root else args.corpus
    return dict(corpus=corpus, data_root=args.data_root, leakage_report=args.leakage_report,
                skip_missing=args.skip_missing)


def cmd_train(args: argparse.Namespace) -> int:
    from medkit.data.synthetic import ensure_corpus
    from medkit.training.deepspeed_setup import cpu_environment
    from medkit.training.launch import overlong_summary, prepare_stage, stage_dry_run

    if args.dry_run:
        print(train_command(args, build=stage_dry_run))
        return 0
    cmd = train_command(args)  # validates the stage, the launch and the batch split before any work
    if not args.data_root:
        ensure_corpus(args.corpus, seed=0)
    # node 0 composes a released-weights profile's starting checkpoint; the other nodes only check for it
    report = prepare_stage(args.stage, profile=args.profile, out=args.out, vision_schedule=args.vision_schedule,
                           compose=args.node_rank == 0, **train_data(args))
    print(overlong_summary(report), flush=True)
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, env=cpu_environment()).returncode


def cmd_compose(args: argparse.Namespace) -> int:
    from medkit.profiles import load_profile
    from medkit.training.launch import initial_checkpoint

    profile = load_profile(args.profile)
    if profile.is_tiny:
        raise ValueError(f"profile {args.profile!r} builds its model from configs; there is nothing to compose")
    print(f"composed checkpoint: {initial_checkpoint(profile, args.out)}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from medkit.training.compute_plan import compute_plan, format_plan, load_hardware
    from medkit.training.stages import load_curriculum, load_stage

    hardware = load_hardware(args.hardware)
    if args.stage == "ablation":
        from medkit.training.compute_plan import ablation_plan, format_ablation_plan

        rows = ablation_plan(hardware, num_gpus=args.gpus, num_nodes=args.nodes, profile=args.profile,
                             sample_tokens=args.sample_tokens, sample_tiles=args.sample_tiles)
        print(format_ablation_plan(rows, hardware, args.gpus * args.nodes))
        return 0
    stages = load_curriculum(args.vision_schedule) if args.stage == "all" else [load_stage(args.stage, args.vision_schedule)]
    for stage in stages:
        plan = compute_plan(stage, hardware, num_gpus=args.gpus, num_nodes=args.nodes, tokens=args.tokens,
                            mfu=args.mfu, profile=args.profile, sample_tokens=args.sample_tokens,
                            sample_tiles=args.sample_tiles, disk_gbps=args.disk_gbps)
        print(format_plan(plan))
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from medkit.eval.placement import visible_gpus
    from medkit.training.ablation import ablation_dry_run, run_ablation
    from medkit.training.launch import Launch

    launch = None  # no launch option given: the profile's default (medkit.training.ablation.default_launch)
    if args.nproc is not None or args.launcher or args.nnodes > 1 or args.hostfile:
        nproc = max(1, visible_gpus()) if args.nproc is None else args.nproc
        launch = Launch(launcher=args.launcher or "torchrun", nproc=nproc,
                        nnodes=args.nnodes, master_addr=args.master_addr, master_port=args.master_port,
                        hostfile=args.hostfile)
    settings = dict(data_root=args.data_root, config=args.config, encoders=args.encoders, max_steps=args.max_steps,
                    launch=launch)
    if args.dry_run:
        print(ablation_dry_run(args.profile, out_dir=args.out, **settings))
        return 0
    run_ablation(args.profile, args.out, eval_limit=args.eval_limit, **settings)
    return 0


TABLE_SELECTIONS = {"table4": "4", "table5": "5", "table6": "6", "figure2": "figure2"}


def benchmark_selection(names: list[str]) -> list[str]:
    """Names, or ``all`` / ``table4`` / ``table5`` / ``table6`` / ``figure2``; anything else is an error
    (``table7`` would otherwise select nothing and "succeed" having run nothing)."""
    from medkit.eval.benchmarks import benchmark_names, get_benchmark

    selected = []
    for name in names:
        if name == "all":
            selected += benchmark_names()
        elif name in TABLE_SELECTIONS:
            selected += benchmark_names(table=TABLE_SELECTIONS[name])
        elif re.fullmatch(r"(table|figure)\d+", name):
            raise ValueError(f"--benchmarks {name}: no such table; the evaluated ones are "
                             f"{', '.join(TABLE_SELECTIONS)} (or all, or benchmark names)")
        else:
            selected.append(get_benchmark(name).name)
    return list(dict.fromkeys(selected))


def benchmark_options(values: list[str]) -> dict[str, dict]:
    """``--option slake.languages=en,zh``: BENCHMARK.NAME=VALUE, a comma list for several values; a
    value is read as YAML (``5``, ``true``) so numbers and flags need no special syntax."""
    import yaml

    options: dict[str, dict] = {}
    for text in values:
        name, sep, value = text.partition("=")
        benchmark, dot, option = name.partition(".")
        if not sep or not dot or not benchmark or not option:
            raise ValueError(f"--option {text!r}: expected BENCHMARK.NAME=VALUE, e.g. slake.languages=en")
        parsed = [yaml.safe_load(v) for v in value.split(",")] if "," in value else yaml.safe_load(value)
        options.setdefault(benchmark, {})[option] = parsed
    return options


def cmd_eval(args: argparse.Namespace) -> int:
    from medkit.eval.parallel import AdapterSource, open_adapter
    from medkit.eval.runner import EvalRequest, plan_eval, preflight, run_eval

    if args.resume and args.rescore:
        raise ValueError("--resume continues decoding, --rescore never decodes: pass one of them")
    names = benchmark_selection(args.benchmarks)  # checked before a model is loaded
    corpus = None if args.data_root else Path(args.corpus)
    if corpus is not None and not (corpus / "manifest.json").is_file():
        from medkit.data.synthetic import generate_corpus

        generate_corpus(corpus, seed=0)
    request = EvalRequest(benchmarks=names, out_dir=Path(args.out),
                          data_root=Path(args.data_root) if args.data_root else None, corpus_dir=corpus,
                          limit=args.limit, resume=args.resume, profile=args.profile, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, options=benchmark_options(args.option or []),
                          nproc=args.nproc, replace=args.replace)
    if args.dry_run:
        adapter = open_adapter(AdapterSource(args.model, profile=args.profile, name=args.name,
                                             reasoning_effort=args.reasoning_effort))
        print(format_eval_plan(plan_eval(adapter, request), request.nproc))
        return 0
    loaded = preflight(request)  # every setting and native file, before the model is opened
    adapter = open_adapter(AdapterSource(args.model, profile=args.profile, name=args.name,
                                         reasoning_effort=args.reasoning_effort))
    for result in run_eval(adapter, request, generate=not args.rescore, loaded=loaded):
        print(format_result(result))
    return 0


def format_eval_plan(rows: list[dict], nproc: int) -> str:
    """The dry run's table, and the bound on new tokens it implies; a wall time needs a measured rate."""
    import pandas as pd

    frame = pd.DataFrame(rows).drop(columns=["count_note"])
    pending, bound = sum(r["pending"] for r in rows), sum(r["max_new_tokens_total"] for r in rows)
    notes = "\n".join(f"  {r['benchmark']}: {r['count_note']}" for r in rows)
    return (f"{frame.to_string(index=False)}\n\n{pending:,} items to decode on {nproc} rank(s), at most "
            f"{bound:,} new tokens (each stops earlier at <|return|>). Wall time: not computed (needs this "
            f"machine's measured items/s: benchmarks/eval_ranks.py).\ncounts:\n{notes}")


def format_result(result: dict) -> str:
    metrics = result["metrics"]
    if "accuracy" in metrics:
        text = (f"accuracy {metrics['accuracy']:.3f} [{metrics['ci_low']:.3f}, {metrics['ci_high']:.3f}] "
                f"unparsed {metrics['unparsed_rate']:.3f} lenient {metrics['lenient_accuracy']:.3f}"
                + (f" medevalkit {metrics['medevalkit_accuracy']:.3f}" if "medevalkit_accuracy" in metrics else ""))
    else:
        text = ", ".join(f"{k} {v['value']:.3f}" if v.get("value") is not None else f"{k}: {v.get('status')}"
                         for k, v in metrics.items() if isinstance(v, dict))
    return f"{result['benchmark']} (n={result['n']}): {text}"


def cmd_notebooks(args: argparse.Namespace) -> int:
    from medkit.notebook.runner import NOTEBOOK_TIMEOUT, format_summary, parse_overrides, run_notebooks

    overrides = parse_overrides(args.p or [], args.params)
    if args.profile:
        overrides["profile"] = args.profile
    timeout = args.timeout
    if timeout is None:  # an hour per notebook is ample for tiny; released-weights training runs for days
        timeout = NOTEBOOK_TIMEOUT if overrides.get("profile", "tiny") == "tiny" else 0
    results = run_notebooks(run_id=args.run_id, only=args.only, start=args.start, overrides=overrides,
                            timeout=timeout or None, cell_timeout=args.cell_timeout,
                            notebooks_dir=args.notebooks_dir)
    print(format_summary(results))
    stopped = [r for r in results if r.status in ("failed", "timeout")]
    for r in stopped:
        print(r.report(), file=sys.stderr)
    return 1 if stopped else 0


def tables_inputs(args: argparse.Namespace) -> tuple[str, str]:
    """(eval folder, ablation results): a folder or file named on the command line must exist (a typo
    would otherwise give published-only tables and exit 0); the defaults may be absent (not run yet)."""
    if args.eval_out is not None and not Path(args.eval_out, "results").is_dir():
        raise FileNotFoundError(f"--eval-out {args.eval_out}: no results/ folder there (an eval writes "
                                "OUT/results/<model>/<benchmark>.json)")
    if args.ablation is not None and not Path(args.ablation).is_file():
        raise FileNotFoundError(f"--ablation {args.ablation}: no such file (the ablation writes results.json)")
    from medkit.notebook.params import latest_run_dir

    run = latest_run_dir()
    return args.eval_out or str(run / "eval"), args.ablation or str(run / "ablation" / "results.json")


def cmd_tables(args: argparse.Namespace) -> int:
    from medkit.reporting.assemble import assemble, recorded_run, run_stamp

    eval_out, ablation = tables_inputs(args)
    profile, seed = recorded_run(eval_out, ablation, profile=args.profile, seed=args.seed)
    done = assemble(eval_out=eval_out, ablation_results=ablation, tables_dir=args.tables_dir,
                    figures_dir=args.figures_dir, stamp=run_stamp(profile, seed))
    print(done.frame().to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medkit", description="MedGPT-OSS reproducibility kit")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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
    p.add_argument("--nproc", type=positive_int, default=1, help="ranks per node (GPUs, or CPU processes)")
    p.add_argument("--vision-schedule", default="table2", choices=["table2", "text"])
    p.add_argument("--corpus", default="runs/corpus", help="the synthetic corpus (tiny profile; made if missing)")
    p.add_argument("--data-root", default=None, help="folder of the Table 1 datasets, one sub-folder each "
                   "(medkit.data.mixture); replaces --corpus")
    p.add_argument("--leakage-report", default=None, help="a leakage audit's JSON: its training ids are excluded")
    p.add_argument("--skip-missing", action="store_true", help="train on the mixture's datasets that are present")
    p.add_argument("--out", default="runs/train", help="stage outputs go to OUT/<stage>/")
    p.add_argument("--max-steps", type=positive_int, default=None)
    p.add_argument("--per-device-batch-size", type=positive_int, default=None, help="samples per rank per micro-step, "
                   "packed into rows of <= max_length tokens (default: the profile's, else Table 2's 16)")
    p.add_argument("--global-batch-size", type=positive_int, default=None, help="samples per optimizer step (default: the "
                   "profile's, else 128); accumulation = global / (per-device x nproc x nnodes)")
    p.add_argument("--save-steps", type=positive_int, default=None, help="checkpoint every N steps instead of the stage's "
                   "interval (every 6 h); rerunning a killed stage resumes from the newest complete one")
    p.add_argument("--save-minutes", type=float, default=None, help="checkpoint every N minutes of training "
                   "(with --save-steps: whichever comes first)")
    p.add_argument("--save-model-only", action="store_true", help="checkpoints without optimizer state (~42 GB "
                   "instead of ~300 GB at paper scale); a killed stage then cannot resume and starts over")
    p.add_argument("--dry-run", action="store_true", help="print world size, batches, DeepSpeed config, attention, "
                   "checkpoints and data counts; start no rank, compose or load no model")
    p.add_argument("--launcher", default="torchrun", choices=["torchrun", "deepspeed"])
    p.add_argument("--nnodes", type=positive_int, default=1, help="nodes (torchrun: run the command on each node)")
    p.add_argument("--node-rank", type=int, default=0, help="torchrun: this node's index")
    p.add_argument("--master-addr", default=None, help="address of node 0 (multi-node)")
    p.add_argument("--master-port", type=int, default=None)
    p.add_argument("--hostfile", default=None, help="deepspeed launcher: the nodes and their GPU slots")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compose", help="released encoder + GPT-oss + fresh projector, saved as stage 0's start")
    p.add_argument("--profile", default="paper", help="a released-weights profile (paper or a YAML file)")
    p.add_argument("--out", default="runs/train", help="written to OUT/init/model, where 'medkit train' looks")
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("plan", help="per-GPU ZeRO-3 memory and GPU-hours of a stage on given hardware")
    p.add_argument("--stage", default="all", help="pretrain, midtrain, instruct, all, or ablation (the LoRA "
                   "encoder ablation's two phases)")
    p.add_argument("--hardware", default="h100-sxm", help="a GPU of medkit/configs/hardware.yaml")
    p.add_argument("--gpus", type=positive_int, default=8, help="GPUs per node")
    p.add_argument("--nodes", type=positive_int, default=1)
    p.add_argument("--tokens", type=float, default=None, help="training tokens, for the FLOPs-based estimate")
    p.add_argument("--mfu", type=float, default=0.25, help="assumed model FLOPs utilisation for that estimate")
    p.add_argument("--profile", default="paper")
    p.add_argument("--vision-schedule", default="table2", choices=["table2", "text"])
    p.add_argument("--sample-tokens", type=positive_int, default=2000, help="a typical sample's tokens, for the "
                   "micro-step's memory (default: one image at 13 tiles and a short turn)")
    p.add_argument("--sample-tiles", type=positive_int, default=13, help="a typical sample's image tiles")
    p.add_argument("--disk-gbps", type=float, default=2.0, help="checkpoint write speed, GB/s (an assumption)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("ablation", help="the LoRA vision-encoder ablation of Figure 1")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--data-root", default=None, help="folder of the config's data files (tiny: generated corpus)")
    p.add_argument("--config", default=None, help="ablation YAML (default: the profile's shipped config)")
    p.add_argument("--encoders", nargs="+", default=None, help="a subset of the config's encoders")
    p.add_argument("--nproc", type=positive_int, default=None, help="ranks per node through DeepSpeed ZeRO-3 (default: every "
                   "visible GPU; tiny profile without any launch option: one single-threaded worker process per encoder, "
                   "one per core at a time, no DeepSpeed)")
    p.add_argument("--launcher", default=None, choices=["torchrun", "deepspeed"], help="default: torchrun")
    p.add_argument("--nnodes", type=positive_int, default=1, help="nodes (--launcher deepspeed with --hostfile: one command "
                   "starts them all)")
    p.add_argument("--hostfile", default=None, help="deepspeed launcher: the nodes and their GPU slots")
    p.add_argument("--master-addr", default=None, help="address of node 0 (multi-node)")
    p.add_argument("--master-port", type=int, default=None)
    p.add_argument("--max-steps", type=positive_int, default=None, help="cap every phase at N steps (a quick check)")
    p.add_argument("--eval-limit", type=positive_int, default=None, help="first N held-out items per evaluation file")
    p.add_argument("--dry-run", action="store_true", help="print encoders, phases, steps, batches, world size, "
                   "DeepSpeed config and trainable parameters per phase; start no rank, compose or load no model")
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("eval", help="run benchmarks (Tables 4-6, Figure 2) against a model")
    p.add_argument("--model", required=True, help="a medkit checkpoint folder or a baseline name")
    p.add_argument("--benchmarks", nargs="+", default=["all"], help="names, all, table4, table5, table6, figure2")
    p.add_argument("--profile", default=None, help="chat and image settings for a medkit checkpoint (default: "
                   "the shipped profile whose architecture the checkpoint has)")
    p.add_argument("--data-root", default=None, help="folder of the native releases (omit: synthetic counterparts)")
    p.add_argument("--corpus", default="runs/corpus", help="synthetic corpus for the counterparts")
    p.add_argument("--out", default="runs/eval", help="predictions/ and results/ go here")
    p.add_argument("--name", type=result_name, default=None, help="the results' folder name and table label "
                   "(default for a checkpoint: its last two path parts and weights hash, e.g. "
                   "instruct-model-1a2b3c4d)")
    p.add_argument("--replace", action="store_true", help="results/<name>/ holds another model's results: "
                   "remove them (without it that is an error)")
    p.add_argument("--limit", type=positive_int, default=None, help="first N items per benchmark")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts decoded together per rank")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="new tokens per item for every "
                   "benchmark (default: each benchmark's budget, or the profile's eval.max_new_tokens)")
    p.add_argument("--nproc", type=positive_int, default=1, help="data-parallel ranks; each gets an equal share of the "
                   "visible GPUs (a model that needs two GPUs: --nproc = GPUs / 2), or of the CPU cores")
    p.add_argument("--reasoning-effort", default=None, choices=["low", "medium", "high"],
                   help="GPT-oss's harmony reasoning setting for a medkit checkpoint (default: the profile's, low)")
    p.add_argument("--option", action="append", metavar="BENCHMARK.NAME=VALUE",
                   help="a native-loader option, e.g. slake.languages=en (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the prediction store of a killed run")
    p.add_argument("--rescore", action="store_true", help="score the stored predictions only (no model calls)")
    p.add_argument("--dry-run", action="store_true", help="load and check the data, print items, pending items, "
                   "batches per rank and budgets per benchmark; write nothing, load no model")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("notebooks", help="execute the numbered notebooks in order with papermill")
    p.add_argument("--profile", default=None, help="profile parameter for every notebook (default: theirs, tiny)")
    p.add_argument("--only", nargs="+", default=None, help="notebook numbers or names, e.g. 03 report_generation")
    p.add_argument("--from", dest="start", default=None, help="start at this notebook and run the rest")
    p.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="override a parameter")
    p.add_argument("--params", default=None, help="YAML file of parameter overrides")
    p.add_argument("--run-id", default=None, help="executed copies go to runs/<run id>/ (default: a timestamp)")
    p.add_argument("--timeout", type=float, default=None, help="wall-clock seconds per notebook, 0: no limit "
                   "(default: 3600 on the tiny profile, no limit on others)")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell (default: no limit)")
    p.add_argument("--notebooks-dir", type=Path, default=None, help="folder of the numbered notebooks "
                   "(default: the project's notebooks/)")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("tables", help="every paper table and figure from result files alone (no model)")
    p.add_argument("--eval-out", default=None, help=f"the eval output folder (holds results/); default "
                   f"{DEFAULT_EVAL_OUT}, used when present")
    p.add_argument("--ablation", default=None, help=f"the ablation's results.json; default {DEFAULT_ABLATION}, "
                   "used when present")
    p.add_argument("--tables-dir", default="paper_tables")
    p.add_argument("--figures-dir", default="figures")
    p.add_argument("--profile", default=None, help="profile the results came from (default: as the result "
                   "files record it; tiny if they do not)")
    p.add_argument("--seed", type=int, default=None, help="default: as the result files record it, else 0")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("reproduce", help="the main job on a profile (tiny: corpus -> train -> held-out loss)")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--run-dir", default=None, help="default: runs/<profile>-<timestamp>")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default from the profile's job)")
    p.set_defaults(func=cmd_reproduce)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """What bad input, bad data or the file system raise: one error line, exit 2 (no traceback)."""
    import yaml

    from medkit.eval.parallel import EvalRankError

    return ConfigError, OSError, ValueError, yaml.YAMLError, EvalRankError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except user_errors() as e:
        print(f"medkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: still one line, the traceback with --debug
        print(f"medkit {args.command}: error: unexpected {type(e).__name__}: {e} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1
