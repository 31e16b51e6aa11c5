"""The `obliviate` command line (what a user reads is `USAGE` and each command's `--help`; this is for maintainers).

An error the user fixes (a config value, a fact record, a model name, a busy run folder) is printed as one line on
stderr and exits 2; `--debug` shows its traceback too.

Options' help comes from the config dataclasses' attribute docstrings (simple-parsing). A YAML config is validated
strictly first (an unknown key is an error naming it), then command-line flags override its values.

Stage commands are found through the ``obliviate.stages`` entry-point group, so this core package never imports a
stage package: each stage registers ``run(config, run_dir, force=...)`` in pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

STAGE_COMMANDS = ("locate", "edit", "audit", "run")

# The user's path, first thing on every --help: a newcomer needs the demo, a config to copy and where the report
# lands before any option list.
USER_PATH = """Try it:  make demo   (sets up .venv, runs the two commands below on the embedded fact world)
By hand:
  obliviate run configs/world-demo.yaml --out runs/world-demo
  obliviate compare runs/world-demo --out runs/world-demo/report
      -> runs/world-demo/report/report.html and table.md, and one line per method on the terminal"""

SUMMARY = ("obliviate: locate where a language model stores a fact, edit it out, then audit whether it is really "
           "gone or only hidden.")

# one line per command, shown under the user's path in `obliviate --help` and atop the command's own --help
COMMANDS = {
    "run": "locate, edit and audit in one go, into one run folder (configs/*.yaml)",
    "locate": "where the model stores the facts: causal traces, logit lens, probes",
    "edit": "make each configured edit and measure it (CounterFact ES / PS / NS, recall, perplexity)",
    "audit": "attack each edit and judge every target erased / suppressed / intact (--calibrate: known cases)",
    "compare": "report.html + table.md over finished runs; prints the report's path and one line per method",
    "verify": "re-hash an audit's certificate.json inputs, re-run the audit, diff the verdicts (exit 0: identical)",
    "world": "build|train|info: the embedded fact world and its two models",
    "models": "list: the model names that load offline",
}

USAGE = "\n".join([
    SUMMARY, "", USER_PATH, "", "Commands (each takes --help):",
    *(f"  {name:<9}{line}" for name, line in COMMANDS.items()),
    "", "--debug (anywhere) shows the full traceback of an error."])


def _description(command: str) -> str:
    line = COMMANDS[command]
    return f"{line[0].upper()}{line[1:]}.\n\n{USER_PATH}"


def _stage_entry(name: str):
    for entry in metadata.entry_points(group="obliviate.stages"):
        if entry.name == name:
            return entry.load()
    raise SystemExit(f"obliviate: the '{name}' stage is not installed (no 'obliviate.stages' entry point named "
                     f"{name!r}); reinstall the project with `pip install -e .`.")


RESUME = ("A re-run into the same --out folder resumes: a stage whose record exists and was made with the same "
          "inputs (its config section, the run-wide fields, and the inputs of the stages it reads) is skipped; a "
          "stage whose inputs changed is re-run, with every stage after it, and the run prints what changed. "
          "A stage killed midway left no record, so it runs again. --force re-runs every stage.")


def _dataclass_parser(prog: str, cls: type, dest: str, defaults: object | None = None,
                      positional: Sequence[tuple[str, dict]] = (), description: str | None = None,
                      epilog: str | None = None, usage: str | None = None):
    import simple_parsing

    class Formatter(simple_parsing.SimpleHelpFormatter):
        # docstrings are prose ("35% recall"): argparse would read a bare % as a format directive and crash --help
        def _expand_help(self, action):
            try:
                return super()._expand_help(action)
            except (ValueError, KeyError, TypeError):
                return self._get_help_string(action)

    parser = simple_parsing.ArgumentParser(prog=prog, add_option_string_dash_variants=simple_parsing.DashVariant.DASH,
                                           add_config_path_arg=False, formatter_class=Formatter,
                                           description=description, epilog=epilog, usage=usage)
    for name, kwargs in positional:
        parser.add_argument(name, **kwargs)
    parser.add_arguments(cls, dest=dest, default=defaults)
    return parser


def world_folder_problem(folder: Path) -> str | None:
    """Why `folder` is not a world written by `obliviate world build --out` (a sentence naming --world and the fix),
    or None when it is one."""
    from obliviate.world.generate import INFO_FILE

    if not (Path(folder) / INFO_FILE).is_file():
        return (f"--world {folder}: no {INFO_FILE} there, so it is not a built world; write one with `obliviate world "
                f"build --out {folder}` (with the WorldConfig options you want, e.g. --n-subjects 480).")
    return None


def _world(argv: Sequence[str]) -> int:
    from obliviate.world import config as world_config

    if not argv or argv[0] not in ("build", "train", "info") or argv[0] in ("-h", "--help"):
        print(f"usage: obliviate world build|train|info [options]  (each takes --help)\n\n{_description('world')}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    action, rest = argv[0], list(argv[1:])
    if action == "build":
        parser = _dataclass_parser("obliviate world build", world_config.WorldConfig, "world",
                                   description=_description("world"),
                                   positional=[("--out", {"type": Path, "default": None,
                                                          "help": "Folder to write (default: the cache)."})])
        args = parser.parse_args(rest)
        from obliviate.world import build_world, ensure_world

        path = build_world(args.world, args.out) if args.out else ensure_world(seed=args.world.seed)
        print(path)
        return 0
    if action == "train":
        from obliviate.world.store import WORLD_MODELS

        parser = _dataclass_parser(
            "obliviate world train", world_config.TrainConfig, "train", description=_description("world"),
            positional=[("--variant", {"choices": [*WORLD_MODELS, "both", "all"], "default": "both",
                                       "help": "Which model to train (both: world and world-retain; all: "
                                               "also world-retain-2, the second oracle)."}),
                        ("--retrain", {"action": "store_true",
                                       "help": "Train the cached model from scratch (default: reuse the cache, "
                                               "or copy the shipped model when it matches the recipe)."}),
                        ("--out", {"type": Path, "default": None,
                                   "help": "Train into this folder with the given options instead of the cache."}),
                        ("--world", {"type": Path, "default": None,
                                     "help": "Train on this world folder (written by `obliviate world build --out`, "
                                             "e.g. with other --n-subjects) instead of the cached world of --seed; "
                                             "needs --out."})])
        args = parser.parse_args(rest)
        from dataclasses import replace

        from obliviate.world import ensure_world, ensure_world_model, train_world_model

        variants = {"both": ["world", "world-retain"], "all": list(WORLD_MODELS)}.get(args.variant, [args.variant])
        if args.world is not None:
            problem = (world_folder_problem(args.world) if args.out is not None
                       else "--world: a built world trains into a folder of its own; give --out DIR as well.")
            if problem:
                print(f"obliviate world train: {problem}", file=sys.stderr)
                return 2
        if args.out is not None:
            world_dir = args.world if args.world is not None else ensure_world(seed=args.train.seed)
            for variant in variants:
                out = args.out / variant if len(variants) > 1 else args.out
                texts, seed_offset = WORLD_MODELS[variant]
                print(train_world_model(world_dir, texts,
                                        replace(args.train, seed=args.train.seed + seed_offset), out,
                                        show_progress=True))
            return 0
        if replace(args.train, seed=0) != world_config.TrainConfig():
            print("obliviate world train: the cache holds the default recipe; give --out DIR to train with other "
                  "options.", file=sys.stderr)
            return 2
        for variant in variants:
            print(ensure_world_model(variant=variant, seed=args.train.seed, show_progress=True,
                                     retrain=args.retrain))
        return 0
    parser = argparse.ArgumentParser(prog="obliviate world info", description=_description("world"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="World seed.")
    args = parser.parse_args(rest)
    from obliviate.world import ensure_world

    print((ensure_world(seed=args.seed) / "world_info.json").read_text())
    return 0


def _models(argv: Sequence[str]) -> int:
    from obliviate.models import available_models

    if list(argv[:1]) != ["list"]:
        print(f"usage: obliviate models list\n\n{_description('models')}")
        return 0 if list(argv[:1]) in (["-h"], ["--help"]) else 2
    for row in available_models():
        print(f"{row['name']:<14} {row['kind']}")
    print("also: a local Hugging Face folder, or a TransformerLens official name when online (e.g. gpt2)")
    return 0


def _carry_yaml_only(config: object, defaults: object) -> None:
    """Copy every field that has no flag (`cmd=False`), at any depth, from the YAML-loaded `defaults` into the
    flag-parsed `config`."""
    from dataclasses import fields, is_dataclass

    for spec in fields(config):
        value = getattr(config, spec.name)
        if spec.metadata.get("cmd", True) is False:
            setattr(config, spec.name, getattr(defaults, spec.name))
        elif is_dataclass(value) and not isinstance(value, type):
            _carry_yaml_only(value, getattr(defaults, spec.name))


def _stage(command: str, argv: Sequence[str]) -> int:
    from obliviate.config import RunConfig, from_dict, load_yaml
    from obliviate.results import RunDir

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("config", nargs="?")
    pre.add_argument("--out")  # so that `--out RUN` without a config is not read as the config path
    known, _ = pre.parse_known_args(argv)
    config_path = known.config if known.config and not known.config.startswith("-") else None
    defaults = load_yaml(RunConfig, config_path) if config_path else RunConfig()
    parser = _dataclass_parser(
        f"obliviate {command}", RunConfig, "config", defaults,
        positional=[("config_file", {"nargs": "?", "metavar": "CONFIG", "help": "YAML run config (configs/)."}),
                    ("--out", {"type": Path, "default": None,
                               "help": "Run folder (default: runs/<config name>)."}),
                    ("--force", {"action": "store_true",
                                 "help": "Re-run every stage, even those finished with the same inputs."})],
        description=_description(command), epilog=textwrap.fill(RESUME, 100),
        # argparse's usage would list every config field before the user's path; the fields follow under options
        usage=f"obliviate {command} [CONFIG] [--out RUN] [--force] [--<field> value ...]")
    args = parser.parse_args(argv)
    config = args.config
    # the flag parser rebuilds YAML-only fields (cmd=False) from their defaults: without this the YAML's attacks
    # were replaced by the defaults (the demo audited with quantization it never asked for)
    _carry_yaml_only(config, defaults)
    # flags bypass the YAML checks: rebuild through the loader so every nested range is checked with its path
    config = from_dict(RunConfig, asdict(config))
    from obliviate.preflight import check_run

    check_run(config)  # before the run folder or any model exists: bad targets fail in seconds, not mid-run
    out = args.out or Path("runs") / (Path(config_path).stem if config_path else "default")
    run_dir = RunDir(out)
    with run_dir.lock():  # two runs in one folder would both do all the work and overwrite each other
        run_dir.write_config(asdict(config))
        _stage_entry(command)(config, run_dir, force=args.force)
    print(f"obliviate {command}: results in {run_dir.root}")
    return 0


def _compare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="obliviate compare", description=_description("compare"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="Run folders.")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"),
                        help="Where report.html, table.md and plots/ go.")
    args = parser.parse_args(argv)
    _stage_entry("compare")(args.runs, args.out)  # prints the report's path and one line per method
    return 0


def _verify(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="obliviate verify", description=_description("verify"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.fill(
            "Every audit writes RUN/audit-<edit>/certificate.json, e.g. obliviate verify "
            "runs/world-demo/audit-memit/certificate.json. Exit 0: every hash matches and the re-run (in a temporary "
            "folder) gives the same verdicts; 1: a verdict or input differs (a table names each target and field); "
            "2: a certified file is missing or changed (the error names it and both sha256), or a bad certificate.",
            100))
    parser.add_argument("certificate", type=Path, help="An audit's certificate.json (RUN/audit-<edit>/).")
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="Largest absolute difference of a verdict's figures counted as equal (0: bit-identical; "
                             "a GPU re-run may need more).")
    args = parser.parse_args(argv)
    return int(_stage_entry("verify")(args.certificate, tolerance=args.tolerance))


def main(argv: Sequence[str] | None = None) -> int:
    from obliviate.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return _dispatch(argv)
    except UserError as error:
        if debug:
            raise
        print(f"obliviate: {error}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "world":
        return _world(rest)
    if command == "models":
        return _models(rest)
    if command == "audit" and "--calibrate" in rest:
        return int(_stage_entry("calibrate")([a for a in rest if a != "--calibrate"]))
    if command in STAGE_COMMANDS:
        return _stage(command, rest)
    if command == "compare":
        return _compare(rest)
    if command == "verify":
        return _verify(rest)
    print(f"obliviate: unknown command {command!r}. Commands: world, models, {', '.join(STAGE_COMMANDS)}, compare, "
          f"verify.",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
