"""The participant a token names, with its study and condition, as every participant API request but the
answer begins (the answer's own statement reads what it needs: participation._ANSWER_SQL).

`Participant.objects.select_related("study", "condition").filter(token=…)` compiles a three-table join of
some 110 columns on every call: about 0.9 ms of web CPU, more than the rest of a session or consent
request, four times in every arrival and again with every batch of trials. Here the same statement is
written out once per process from the models' own metadata, and its row is read back into model
instances the way the ORM's select_related does (Model.from_db, each field's database converters, the
related objects put in the foreign keys' caches), so the views get the objects they always got.
"""

from functools import cache

from django.db import connection

from .models import Condition, Participant, Study

# Both foreign keys are NOT NULL: inner joins, as select_related makes them.
_JOINED = (("p", Participant), ("s", Study), ("c", Condition))


@cache
def _statement(vendor: str) -> tuple[str, tuple]:
    """The SQL, and per model its fields' attnames and (column, Col, converters) of the fields that have
    database converters. Per vendor: quoting and converters are the backend's."""
    quote = connection.ops.quote_name
    columns, layout = [], []
    for alias, model in _JOINED:
        fields = model._meta.concrete_fields
        converting = []
        for i, field in enumerate(fields):
            col = field.get_col(alias)
            converters = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
            if converters:
                converting.append((len(columns) + i, col, tuple(converters)))
        columns += [f"{alias}.{quote(field.column)}" for field in fields]
        layout.append((tuple(field.attname for field in fields), tuple(converting)))
    table = {alias: quote(model._meta.db_table) for alias, model in _JOINED}
    column = {name: quote(Participant._meta.get_field(name).column) for name in ("study", "condition", "token")}
    sql = (
        f"SELECT {', '.join(columns)} FROM {table['p']} p "
        f"INNER JOIN {table['s']} s ON s.{quote(Study._meta.pk.column)} = p.{column['study']} "
        f"INNER JOIN {table['c']} c ON c.{quote(Condition._meta.pk.column)} = p.{column['condition']} "
        f"WHERE p.{column['token']} = %s"
    )
    return sql, tuple(layout)


def participant_by_token(token: str) -> Participant | None:
    """The participant with `token`, its `study` and `condition` loaded; None when no participant has it."""
    sql, layout = _statement(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [token])
        row = cursor.fetchone()
    if row is None:
        return None
    row = list(row)
    for _, converting in layout:
        for position, col, converters in converting:
            for converter in converters:
                row[position] = converter(row[position], col, connection)
    objects, start = [], 0
    for (_, model), (attnames, _) in zip(_JOINED, layout):
        values = row[start : start + len(attnames)]
        start += len(attnames)
        objects.append(model.from_db(connection.alias, attnames, values))
    participant, study, condition = objects
    Participant.study.field.set_cached_value(participant, study)
    Participant.condition.field.set_cached_value(participant, condition)
    return participant
