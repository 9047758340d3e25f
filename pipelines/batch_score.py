"""Batch scoring as a pipeline script (the same as `anomaly-vae batch`), for cron,
systemd or `spark-submit`:

    spark-submit --master yarn pipelines/batch_score.py /mnt/shared/incoming \\
        --output-dir /mnt/shared/scored --model models:/anomaly-vae@champion --engine spark
"""

import sys

from anomaly_vae.cli import main

if __name__ == "__main__":
    main(["batch", *sys.argv[1:]])
