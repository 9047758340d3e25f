"""Train the whole VAE family on one data source and keep the best (the pipeline
behind `anomaly-vae fit --family`).

    python pipelines/family.py DATA [--label-col C] [--id-col C] [--normal-class K]
        [--set key=value ...] [--register]

DATA is a CSV/Parquet table, an image folder, or fashionmnist:ROOT / mnist:ROOT.
"""

from __future__ import annotations

import argparse

from anomaly_vae.config import load_config
from anomaly_vae.family import fit_family, format_comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--config")
    parser.add_argument("--label-col")
    parser.add_argument("--id-col")
    parser.add_argument("--normal-class")
    parser.add_argument("--eval")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--register", action="store_true", default=None)
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.label_col:
        overrides.append(f"data.label_column={args.label_col}")
    if args.id_col:
        overrides.append(f"data.id_column={args.id_col}")
    config = load_config(args.config, overrides)
    result = fit_family(
        args.data,
        config,
        eval_source=args.eval,
        normal_class=args.normal_class,
        register=args.register,
        progress=lambda name: print(f"training {name} ...", flush=True),
    )
    print(format_comparison(result))
    print(f"family trained in {result.seconds:.1f} s; model saved to {result.model_dir}")
    if result.run is not None:
        print(f"MLflow parent run {result.run.run_id}; registered {result.run.model_uri}")


if __name__ == "__main__":
    main()
