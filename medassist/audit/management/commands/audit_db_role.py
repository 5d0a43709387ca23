"""`manage.py audit_db_role ROLE [--create]`: make ROLE the application's Postgres role, one that cannot
touch the audit trail behind the application's back.

Run it as the database owner (the role that runs `migrate`), after every `migrate` (compose's setup
service does). It grants ROLE what web and workers need on every table of the schema (SELECT, INSERT,
UPDATE, DELETE, TRUNCATE; sequences: USAGE, SELECT) and takes back UPDATE, DELETE and TRUNCATE on the
audit table, so ROLE can only append and read events. ROLE owns no table, so it can neither disable
nor drop the append-only and no-TRUNCATE triggers; it must not be a superuser (refused here) nor
able to create roles. With ``--create`` the role is created (LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
NOBYPASSRLS), or altered to that, with the password from the environment variable ``--password-env``
(default POSTGRES_APP_PASSWORD). Then point the app's DATABASE_URL at ROLE (docs/security.md).
"""
from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from psycopg2 import sql

from medassist.audit.models import AuditEvent


def grant_statements(role: str) -> list[sql.Composed]:
    """The GRANT/REVOKE statements that make ``role`` an append-only user of the audit table."""
    who = sql.Identifier(role)
    audit = sql.Identifier(AuditEvent._meta.db_table)
    return [
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(who),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {}").format(who),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(who),
        sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {} FROM {}").format(audit, who),
    ]


class Command(BaseCommand):
    help = "Grant the app's Postgres ROLE what it needs, with append-only rights on the audit table."

    def add_arguments(self, parser):
        parser.add_argument("role")
        parser.add_argument("--create", action="store_true", help="create the role (or reset its attributes)")
        parser.add_argument("--password-env", default="POSTGRES_APP_PASSWORD",
                            help="environment variable holding the role's password (with --create)")

    def handle(self, *args, role, create, password_env, **options):
        if connection.vendor != "postgresql":
            raise CommandError("audit_db_role is for Postgres (the embedded SQLite default has no roles)")
        with transaction.atomic(), connection.cursor() as cursor:
            if create:
                password = os.environ.get(password_env, "")
                if not password:
                    raise CommandError(f"--create needs the role's password in ${password_env}")
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                cursor.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
                                       "NOREPLICATION PASSWORD %s").format(sql.Identifier(role)), [password])
            cursor.execute("SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = %s", [role])
            row = cursor.fetchone()
            if row is None:
                raise CommandError(f"no role {role!r} (use --create)")
            if any(row):
                raise CommandError(f"role {role!r} is a superuser or can create roles / bypass RLS: "
                                   f"it could disable the audit triggers; use a plain role")
            cursor.execute("SELECT pg_has_role(%s, tableowner, 'MEMBER') FROM pg_tables WHERE tablename = %s",
                           [role, AuditEvent._meta.db_table])
            owner = cursor.fetchone()
            if owner and owner[0]:
                raise CommandError(f"role {role!r} owns (or is a member of the owner of) the audit table and could "
                                   f"drop its triggers; "
                                   f"run migrate as another role (the owner) and grant {role!r} with this command")
            for statement in grant_statements(role):
                cursor.execute(statement)
        self.stdout.write(f"role {role} may read and write the application's tables and only append to the audit trail")
