"""DVC stage evaluate: the focus experiment's metrics (retrieval mAP/R@k or classification top-1/top-5; flat
numeric JSON, DVC top-level metrics)."""

from distillery.cli import run_stage, stage_parser
from distillery.engine import steps
from distillery.utils.io import read_json, write_json

parser = stage_parser(__doc__)


def main(args, params):
    ds, method = params["dataset"], params["method"]
    metrics = steps.evaluate(params, ds, method, "focus", extra=read_json("metrics/focus_train.json"))
    write_json("metrics/focus.json", metrics)
    write_json("metrics/focus_provenance.json", steps.provenance(params, ds, method))
    print(f"{method} on {ds}: {steps.summary(metrics)}")


if __name__ == "__main__":
    run_stage(parser, main)
