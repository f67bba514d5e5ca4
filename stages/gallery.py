"""DVC stage gallery@<dataset>: teacher embeddings of the train and gallery images (for evaluation, whitening)."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")


def main(args, params):
    meta = steps.gallery(params, args.dataset)
    print(f"gallery {args.dataset}: embedded {meta['n_train']} train images and the gallery")


if __name__ == "__main__":
    run_stage(parser, main)
