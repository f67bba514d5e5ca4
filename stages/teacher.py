"""DVC stage teacher@<dataset> (teacher_cls@<dataset>): train the teacher (retrieval: the gallery network,
CE + triplet; classification: the classifier, CE); checkpoint + metrics."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import distributed, steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")


def main(args, params):
    metrics = steps.train_teacher(params, args.dataset, progress=not args.no_progress)
    if "top1" in metrics:
        print(f"teacher {args.dataset}: top-1 {metrics['top1']:.2f}, top-5 {metrics.get('top5', float('nan')):.2f}")
    elif distributed.is_main():
        print(f"teacher {args.dataset}: mAP {metrics['map']:.2f}, R@1 {metrics['recall_at_1']:.2f}")


if __name__ == "__main__":
    run_stage(parser, main, distributed_stage=True)
