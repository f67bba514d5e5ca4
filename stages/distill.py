"""DVC stage distill: train the focus experiment's student (params `dataset`, `method`) against its teacher."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import distributed, steps
from distillery.utils.io import write_json

parser = stage_parser(__doc__)


def main(args, params):
    info = steps.distill(params, params["dataset"], params["method"], "focus", progress=not args.no_progress)
    if distributed.is_main():
        write_json("metrics/focus_train.json", info)
        print(f"distilled {params['method']} on {params['dataset']} in {info['train_seconds']:.1f} s "
              f"({info['world_size']} process(es), batch {info['effective_batch_size']})")


if __name__ == "__main__":
    run_stage(parser, main, distributed_stage=True)
