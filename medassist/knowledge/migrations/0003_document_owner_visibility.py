"""issue 13 (access control, shared corpus): documents get an owner and a visibility; PMIDs unique per owner.

Documents that exist already were imported or added before owners existed: they stay shared (added with
default "shared", then the default becomes "private" for new rows)."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("knowledge", "0002_diagnosis_associations"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="document",
            options={"ordering": ["-created_at", "-id"],
                     "permissions": [("share_document", "Can add documents every user sees to the corpus")]},
        ),
        migrations.AddField(
            model_name="document",
            name="owner",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="corpus_documents", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name="document",
            name="visibility",
            field=models.CharField(choices=[("private", "its owner only"), ("shared", "every user")], default="shared",
                                   max_length=8),
        ),
        migrations.AlterField(
            model_name="document",
            name="visibility",
            field=models.CharField(choices=[("private", "its owner only"), ("shared", "every user")], default="private",
                                   max_length=8),
        ),
        migrations.AlterField(
            model_name="document",
            name="pmid",
            field=models.CharField(blank=True, max_length=20, null=True),
        ),
        migrations.AddIndex(
            model_name="document",
            index=models.Index(fields=["visibility", "owner"], name="document_visibility_owner"),
        ),
        migrations.AddConstraint(
            model_name="document",
            constraint=models.UniqueConstraint(condition=models.Q(("owner__isnull", True)), fields=("pmid",),
                                               name="unique_pmid_unowned"),
        ),
        migrations.AddConstraint(
            model_name="document",
            constraint=models.UniqueConstraint(condition=models.Q(("owner__isnull", False)), fields=("owner", "pmid"),
                                               name="unique_pmid_per_owner"),
        ),
    ]
