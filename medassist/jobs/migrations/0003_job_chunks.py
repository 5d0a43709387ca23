"""issue 12 (faults): per-chunk delivery records."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0002_status_detail")]

    operations = [
        migrations.CreateModel(
            name="JobChunk",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("start", models.PositiveIntegerField()),
                ("end", models.PositiveIntegerField()),
                ("state", models.CharField(choices=[("pending", "Pending"), ("queued", "Queued"), ("running", "Running"),
                                                    ("done", "Done")], default="pending", max_length=10)),
                ("deliveries", models.PositiveSmallIntegerField(default=0, help_text="deliveries that started running it")),
                ("time_limit", models.PositiveIntegerField(help_text="hard time limit of one delivery, seconds")),
                ("enqueued_at", models.DateTimeField(blank=True, null=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("job", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="chunks",
                                          to="jobs.job")),
            ],
            options={
                "ordering": ["job", "start"],
                "indexes": [models.Index(fields=["state", "job"], name="jobs_jobchu_state_931490_idx")],
                "constraints": [models.UniqueConstraint(fields=("job", "start"), name="unique_chunk_start_per_job")],
            },
        ),
    ]
