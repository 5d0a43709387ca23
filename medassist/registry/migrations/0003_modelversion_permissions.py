"""issue 13 (access control): the promote_modelversion permission."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("registry", "0002_answer_evidence_role")]

    operations = [
        migrations.AlterModelOptions(
            name="modelversion",
            options={
                "ordering": ["role", "-created_at"],
                "permissions": [("promote_modelversion", "Can promote, force-promote and roll back model versions")],
            },
        ),
    ]
