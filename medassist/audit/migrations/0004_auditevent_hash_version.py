"""Hash version per event: existing events keep version 1 (verified the old way); new ones are 2.

ADD COLUMN with a default fills existing rows without an UPDATE, so the append-only trigger is not hit.
"""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0003_model_promotion_actions'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='hash_version',
            field=models.PositiveSmallIntegerField(default=1),
        ),
    ]
