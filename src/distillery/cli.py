"""Shared command-line plumbing for the stage scripts: --help, --params, and one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from distillery.config import ConfigError, load_params
from distillery.data.registry import DatasetError
from distillery.engine import distributed
from distillery.engine.trainer import TrainingDiverged
from distillery.utils.registry import UnknownNameError

USER_ERRORS = (ConfigError, DatasetError, TrainingDiverged, UnknownNameError, FileNotFoundError, ValueError, TypeError,
               OSError)


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run_stage(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace, dict], None],
              distributed_stage: bool = False) -> None:
    """Parse arguments, load + validate params, run ``body``; a user error is one line on stderr and exit 2
    (set DISTILLERY_DEBUG=1 for the full traceback).

    Under torchrun, a ``distributed_stage`` (a training stage) runs ``body`` on every rank (it joins the
    process group itself and writes on rank 0); any other stage runs on rank 0 alone and the other ranks exit."""
    args = parser.parse_args()
    if not distributed_stage and int(os.environ.get("RANK", 0)) != 0:
        return
    try:
        params = load_params(args.params)
        body(args, params)
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as err:
        if os.environ.get("DISTILLERY_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.shutdown()
