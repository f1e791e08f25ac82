"""Command line: `python -m ptqlib run params/default.yaml [--stages train,shadows]`."""
from __future__ import annotations

import argparse
import sys

from .config import STAGES, ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptqlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="validate a preset and run its stage notebooks")
    run_p.add_argument("preset", help="YAML preset, e.g. params/default.yaml")
    run_p.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)}")
    run_p.add_argument("--verbose", action="store_true",
                       help="also show Papermill's cell progress bar and the notebook kernels' log lines")
    check_p = sub.add_parser("check", help="validate a preset and exit")
    check_p.add_argument("preset")
    status_p = sub.add_parser("status", help="jobs done / pending / failed per stage, sizes, time left")
    status_p.add_argument("preset")
    clean_p = sub.add_parser("clean", help="remove a preset's artifacts and reports (lists them first)")
    clean_p.add_argument("preset")
    clean_p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_parser("keys", help="every config key with its default and a one-line doc")
    args = parser.parse_args(argv)

    from . import runner
    from .config import load_preset

    try:
        if args.command == "keys":
            from .config import describe

            print(describe())
            return 0
        if args.command == "check":
            cfg = load_preset(args.preset)
            print(f"{args.preset}: ok ({len(cfg.recipes())} quantization recipes)")
            return 0
        if args.command in ("status", "clean"):
            from . import manage

            cfg = load_preset(args.preset)
            if args.command == "status":
                print(manage.status_table(cfg).to_string(index=False))
                return 0
            manage.clean(cfg, yes=args.yes)
            return 0
        stages = runner.parse_stages(args.stages)
        cfg = load_preset(args.preset)  # fail fast, before importing the heavy machinery
        try:
            runner.check_places(cfg)  # store, reports, data_root: before anything is written
        except ConfigError as err:
            raise ConfigError(f"{args.preset}: {err}") from None
        if cfg.dataset != "digits" and not cfg.download:
            from .datasets_disk import check_available

            try:
                check_available(cfg)  # before any compute: a missing folder or a corrupt file
            except ConfigError as err:
                raise ConfigError(f"{args.preset}: {err}") from None
        return runner.run(args.preset, stages, verbose=args.verbose)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
