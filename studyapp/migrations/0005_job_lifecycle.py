# One lifecycle for every background job (models.Job): a Sobol analysis gains the stage, attempts, heartbeat
# and start time a stimulus job has, and both get the progress range check under the same name pattern.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('studyapp', '0004_server_timing_and_flags'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='stimulusjob',
            name='job_progress_range',
        ),
        migrations.AddField(
            model_name='sobolanalysis',
            name='attempts',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='sobolanalysis',
            name='heartbeat',
            field=models.DateTimeField(blank=True, help_text='last sign of life of the running worker', null=True),
        ),
        migrations.AddField(
            model_name='sobolanalysis',
            name='stage',
            field=models.CharField(blank=True, max_length=40),
        ),
        migrations.AddField(
            model_name='sobolanalysis',
            name='started',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='sobolanalysis',
            name='progress',
            field=models.FloatField(default=0.0, help_text='percent of the current stage'),
        ),
        migrations.AddConstraint(
            model_name='sobolanalysis',
            constraint=models.CheckConstraint(condition=models.Q(('progress__gte', 0), ('progress__lte', 100)), name='sobolanalysis_progress_range'),
        ),
        migrations.AddConstraint(
            model_name='stimulusjob',
            constraint=models.CheckConstraint(condition=models.Q(('progress__gte', 0), ('progress__lte', 100)), name='stimulusjob_progress_range'),
        ),
    ]
