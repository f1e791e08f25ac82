"""Command line: `python -m ptqlib run params/default.yaml [--stages train,shadows]`, and check, status,
clean, keys. Every bad input exits 2 with one line naming the key or path."""
from __future__ import annotations

import argparse
import sys

from ptqlib.errors import ConfigError
from ptqlib.study.config import STAGES, StudyConfig
from ptqlib.study.presets import key_listing, load_preset


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ptqlib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="validate a preset and run its stage notebooks")
    run_p.add_argument("preset", help="YAML preset, e.g. params/default.yaml")
    run_p.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)}")
    run_p.add_argument("--verbose", action="store_true",
                       help="also show Papermill's cell progress bar and the notebook kernels' log lines")
    sub.add_parser("check", help="validate a preset and its data, and count its jobs per stage").add_argument("preset")
    sub.add_parser("status", help="jobs done / pending / failed per stage, sizes, time left").add_argument("preset")
    clean_p = sub.add_parser("clean", help="remove a preset's artifacts and reports (lists them first)")
    clean_p.add_argument("preset")
    clean_p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_parser("keys", help="every config key with its default and a one-line doc")
    return p


def checked_preset(path: str) -> StudyConfig:
    """The validated preset, its folder dataset checked on disk (one-line ConfigError otherwise)."""
    cfg = load_preset(path)
    from ptqlib import runner  # the heavy machinery (torch, papermill) only once the preset is valid
    from ptqlib.study.stages import check_data  # (likewise: torch)

    try:
        runner.check_places(cfg)  # store, reports, data_root: before anything is written
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if cfg.dataset != "digits" and not cfg.download:
        try:
            check_data(cfg)  # before any compute: a missing folder or a corrupt file
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return cfg


def check(path: str) -> str:
    """'ok' with the number of jobs each stage would run."""
    cfg = checked_preset(path)
    from ptqlib.study.plan import plan_study  # torch only once the preset is valid

    counts = ", ".join(f"{stage} {len(jobs)}" for stage, jobs in plan_study(cfg).stages.items())
    return f"{path}: ok ({len(cfg.recipes())} quantization recipes; jobs per stage: {counts})"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "keys":
            print(key_listing())
        elif args.command == "check":
            print(check(args.preset))
        elif args.command in ("status", "clean"):
            from ptqlib import manage  # torch only once the preset is valid

            cfg = load_preset(args.preset)
            if args.command == "status":
                print(manage.status_table(cfg).to_string(index=False))
            else:
                manage.clean(cfg, yes=args.yes)
        else:
            checked_preset(args.preset)  # fail fast, before anything is computed
            from ptqlib import runner  # torch and papermill only once the preset is valid

            stages = runner.parse_stages(args.stages)
            return runner.run(args.preset, stages, verbose=args.verbose)
        return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
