"""DVC stage prepare@<dataset>: read the dataset in its published layout, write the decoded uint8 cache."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps

parser = stage_parser(__doc__)
parser.add_argument("--dataset", required=True, help="a key of params.yaml `data`")


def main(args, params):
    meta = steps.prepare(params, args.dataset, progress=not args.no_progress)
    print(f"prepared {args.dataset}: {meta['n_images']} images {meta['splits']}, skipped {meta['n_skipped_images']}")


if __name__ == "__main__":
    run_stage(parser, main)
