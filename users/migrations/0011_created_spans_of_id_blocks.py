"""UserCreatedSpan: each block of 1,024 user ids with the earliest and the latest creation time
among its users, kept by a statement-level trigger on users_user, and filled from the table.

The trigger runs once per write statement (an ingest batch's merge, an API or admin save) over
the rows it wrote (a transition table), and widens only the spans that grow, in block order,
so concurrent batches lock a block only where both widen it and never in opposite orders."""

from django.db import migrations, models

WIDEN_FUNCTION = """
CREATE FUNCTION users_created_span_widen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO users_usercreatedspan AS span (block, low, high)
    SELECT written.block, written.low, written.high
    FROM (
        SELECT id >> 10 AS block, min(created_at) AS low, max(created_at) AS high
        FROM written_rows GROUP BY 1
    ) AS written
    LEFT JOIN users_usercreatedspan AS known ON known.block = written.block
    WHERE known.block IS NULL OR written.low < known.low OR written.high > known.high
    ORDER BY written.block
    ON CONFLICT (block) DO UPDATE
        SET low = least(span.low, excluded.low), high = greatest(span.high, excluded.high);
    RETURN NULL;
END
$$;
CREATE TRIGGER users_created_span_on_insert AFTER INSERT ON users_user
    REFERENCING NEW TABLE AS written_rows
    FOR EACH STATEMENT EXECUTE FUNCTION users_created_span_widen();
CREATE TRIGGER users_created_span_on_update AFTER UPDATE ON users_user
    REFERENCING NEW TABLE AS written_rows
    FOR EACH STATEMENT EXECUTE FUNCTION users_created_span_widen();
INSERT INTO users_usercreatedspan (block, low, high)
SELECT id >> 10, min(created_at), max(created_at) FROM users_user GROUP BY 1;
"""

DROP_FUNCTION = """
DROP TRIGGER IF EXISTS users_created_span_on_insert ON users_user;
DROP TRIGGER IF EXISTS users_created_span_on_update ON users_user;
DROP FUNCTION IF EXISTS users_created_span_widen();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0010_last_name_index_holds_names"),
    ]

    operations = [
        migrations.CreateModel(
            name="UserCreatedSpan",
            fields=[
                ("block", models.BigIntegerField(primary_key=True, serialize=False)),
                ("low", models.DateTimeField()),
                ("high", models.DateTimeField()),
            ],
        ),
        migrations.RunSQL(WIDEN_FUNCTION, DROP_FUNCTION),
    ]
