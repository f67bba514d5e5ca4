"""DVC stage gallery@<dataset> (extra_gallery@<dataset>-<name> with --teacher NAME): teacher embeddings of the
train images (for the whitening fit) and of the gallery images (for asymmetric evaluation)."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")
parser.add_argument("--teacher", default="teacher", help="'teacher' (default) or a key of params.yaml `teachers`")


def main(args, params):
    meta = steps.gallery(params, args.dataset, name=args.teacher)
    print(f"gallery {args.dataset} ({args.teacher}): embedded {meta['n_train']} train images and the gallery")


if __name__ == "__main__":
    run_stage(parser, main)
