"""issue 13 (access control): view_all_jobs / run_finetune / run_diagnostics permissions."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("jobs", "0004_job_privacy")]

    operations: list = [
        migrations.AlterModelOptions(
            name="job",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("view_all_jobs", "Can see and export every user's jobs"),
                    ("run_finetune", "Can run fine-tuning jobs"),
                    ("run_diagnostics", "Can run the noop diagnostics kind (queue benchmarks)"),
                ],
            },
        ),
    ]
