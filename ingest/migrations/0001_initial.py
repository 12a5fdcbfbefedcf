"""Ingest runs, their batches and rejected rows."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='IngestRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('file_name', models.CharField(max_length=1024)),
                ('file_size', models.BigIntegerField()),
                ('checksum', models.CharField(help_text='SHA-256 of the file', max_length=64)),
                ('status', models.CharField(choices=[('publishing', 'Publishing'), ('published', 'Published'), ('indexing', 'Indexing'), ('completed', 'Completed'), ('failed', 'Failed')], default='publishing', max_length=16)),
                ('batch_size', models.PositiveIntegerField()),
                ('started_at', models.DateTimeField(auto_now_add=True)),
                ('published_at', models.DateTimeField(blank=True, null=True)),
                ('stored_at', models.DateTimeField(blank=True, help_text='last batch stored', null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('rows_published', models.BigIntegerField(default=0)),
                ('batches_published', models.IntegerField(default=0)),
                ('rows_stored', models.BigIntegerField(default=0)),
                ('rows_rejected', models.BigIntegerField(default=0)),
                ('batches_failed', models.IntegerField(default=0)),
                ('error', models.TextField(blank=True)),
                ('bulk', models.BooleanField(default=False)),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='IngestBatch',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.IntegerField()),
                ('status', models.CharField(choices=[('started', 'Started'), ('stored', 'Stored'), ('failed', 'Failed')], default='started', max_length=16)),
                ('attempts', models.IntegerField(default=0)),
                ('rows', models.IntegerField(default=0)),
                ('stored', models.IntegerField(default=0)),
                ('rejected', models.IntegerField(default=0)),
                ('error', models.TextField(blank=True)),
                ('payload', models.JSONField(blank=True, null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='batches', to='ingest.ingestrun')),
            ],
            options={
                'verbose_name_plural': 'ingest batches',
                'ordering': ['run', 'number'],
                'constraints': [models.UniqueConstraint(fields=('run', 'number'), name='ingest_batch_unique_number')],
            },
        ),
        migrations.CreateModel(
            name='RejectedRow',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('line', models.IntegerField(help_text='1-based line in the file; the header is line 1')),
                ('reason', models.TextField()),
                ('raw', models.TextField(blank=True)),
                ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='rejected_rows', to='ingest.ingestrun')),
            ],
            options={
                'ordering': ['run', 'line'],
                'constraints': [models.UniqueConstraint(fields=('run', 'line'), name='ingest_rejected_unique_line')],
            },
        ),
    ]
