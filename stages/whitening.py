"""DVC stage whitening@<dataset>: fit PCA-whitening on the teacher's training embeddings."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")


def main(args, params):
    info = steps.whitening(params, args.dataset)
    print(f"whitening {args.dataset}: {info['in_dim']} -> {info['out_dim']} dims")


if __name__ == "__main__":
    run_stage(parser, main)
