"""issue 13 (privacy): purge status, owner deletion."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_job_chunks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations: list = [
        migrations.AddField(
            model_name="job",
            name="purged_at",
            field=models.DateTimeField(blank=True, help_text="when its inputs and results were deleted", null=True),
        ),
        migrations.AlterField(
            model_name="job",
            name="owner",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="jobs",
                                    to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name="job",
            name="status",
            field=models.CharField(choices=[("queued", "Queued"), ("running", "Running"), ("succeeded", "Succeeded"),
                                            ("partially_failed", "Partially Failed"), ("failed", "Failed"),
                                            ("cancelled", "Cancelled"), ("purged", "Purged")],
                                   db_index=True, default="queued", max_length=20),
        ),
    ]
