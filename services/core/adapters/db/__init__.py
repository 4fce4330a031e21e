"""PostgreSQL: the pool, migrations and the queries each capability needs."""
