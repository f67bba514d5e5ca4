"""DVC stage whitening@<dataset> (extra_whitening@<dataset>-<name> with --teacher NAME): fit PCA-whitening on
the teacher's training embeddings."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")
parser.add_argument("--teacher", default="teacher", help="'teacher' (default) or a key of params.yaml `teachers`")


def main(args, params):
    info = steps.whitening(params, args.dataset, name=args.teacher)
    print(f"whitening {args.dataset} ({args.teacher}): {info['in_dim']} -> {info['out_dim']} dims")


if __name__ == "__main__":
    run_stage(parser, main)
