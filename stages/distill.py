"""DVC stage distill: train the focus experiment's student (params `dataset`, `method`) against its teacher."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps
from distillery.utils.io import write_json

parser = stage_parser(__doc__)


def main(args, params):
    info = steps.distill(params, params["dataset"], params["method"], "focus", progress=not args.no_progress)
    write_json("metrics/focus_train.json", info)
    print(f"distilled {params['method']} on {params['dataset']} in {info['train_seconds']:.1f} s")


if __name__ == "__main__":
    run_stage(parser, main)
