"""SQL text for test statements run through psql: identifiers and literals quoted by psycopg."""

from psycopg import sql


def ident(*names):
    return sql.Identifier(*names).as_string(None)


def literal(value):
    return sql.Literal(value).as_string(None)
