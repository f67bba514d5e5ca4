"""DVC stage teacher@<dataset>: train the gallery (teacher) network with CE + triplet; checkpoint + metrics."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import distributed, steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")


def main(args, params):
    metrics = steps.train_teacher(params, args.dataset, progress=not args.no_progress)
    if distributed.is_main():
        print(f"teacher {args.dataset}: mAP {metrics['map']:.2f}, R@1 {metrics['recall_at_1']:.2f}")


if __name__ == "__main__":
    run_stage(parser, main, distributed_stage=True)
