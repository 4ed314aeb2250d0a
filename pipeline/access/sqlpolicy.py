"""Parse one SQL text and decide whether a role may run it; produce the SQL actually run.

Consumes: the SQL a client sent, the user's role, the case and purpose it carried.
Produces: a `Decision` (the SQL to execute, regenerated from the checked syntax
tree with forced limits, and the output format) or `PolicyRefused` naming the rule.

The SQL is parsed with sqlglot's ClickHouse dialect, never pattern-matched, and
what runs is the checked tree rendered again without comments: text the parser
did not see (a comment that hides a second statement, a trailing SETTINGS) cannot
reach ClickHouse. Deny unless allowed. Each rule has an id (R-...) that the error
names and that `docs/access-rules.md` maps to this code and to its test.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from alpr.schemas.models import UserRole
from alpr.core.errors import Refused

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its "falling back to Command" warnings are decided here

# Tables each role may read, and the columns it may not. Nobody reads holds,
# held_reads, users, schema_migrations or dictionaries through the proxy.
ROLE_TABLES: dict[UserRole, dict[str, frozenset[str]]] = {
    UserRole.ANALYST: {"reads": frozenset({"crop_jpeg"}), "alerts": frozenset()},
    UserRole.SUPERVISOR: {"reads": frozenset(), "alerts": frozenset()},
    UserRole.AUDITOR: {"audit_log": frozenset()},
    UserRole.ADMINISTRATOR: {},
}

# What clickhouse-connect sends when it connects (ENGINEERING-NOTES), compared as
# parsed and re-rendered SQL: these, and only these, may touch `system` or run
# without a case number.
CONNECT_QUERIES = frozenset({
    "SELECT VERSION(), timezone()",
    "SELECT name, value, readonly FROM system.settings LIMIT 10000",
    "SELECT 1 AS check",
    "SELECT 1",
    "SELECT version()",
    "SELECT timezone()",
})

# Output formats whose rows the proxy can count exactly (the audit records rows returned).
FORMATS = {f.lower(): f for f in (
    "TabSeparated", "TabSeparatedRaw", "TabSeparatedWithNames", "TabSeparatedWithNamesAndTypes",
    "TSV", "TSVRaw", "TSVWithNames", "TSVWithNamesAndTypes",
    "CSV", "CSVWithNames", "CSVWithNamesAndTypes",
    "JSONEachRow", "JSONCompactEachRow", "JSONStringsEachRow", "JSONLines", "NDJSON",
    "JSON", "JSONCompact", "JSONStrings",
    "Native", "Arrow", "ArrowStream", "Parquet",
)}
DEFAULT_FORMAT = "TabSeparated"

# Functions that reach outside the query's tables, read other data, or introspect
# the server. Matched on the lower-cased name; prefixes catch whole families.
DENIED_FUNCTION_PREFIXES = (
    "dict", "joinget", "file", "url", "remote", "cluster", "s3", "gcs", "oss", "hdfs", "azure", "mysql",
    "postgres", "mongo", "redis", "jdbc", "odbc", "sqlite", "executable", "python", "iceberg", "deltalake",
    "hudi", "hive", "input", "merge", "view", "generaterandom", "getclienthttpheader", "getsetting",
    "getmacro", "getserverport", "globalvariable", "addressto", "demangle", "catboost", "evalml",
    "modelevaluate", "sleep", "columns", "filesystem", "loadbalancing", "naivebayes", "timeseries",
)

_CASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:#-]{1,63}$")
MIN_PURPOSE_CHARS = 5
MIN_PURPOSE_CHARS_WITHOUT_CASE = 20


class PolicyRefused(Refused):
    """A query the rules forbid. `rule` is the id in docs/access-rules.md."""

    def __init__(self, rule: str, message: str, code: int = 497, status: int = 403) -> None:
        super().__init__(f"{message} [rule {rule}]")
        self.rule, self.code, self.status = rule, code, status


@dataclass(frozen=True)
class Limits:
    max_result_rows: int
    max_result_bytes: int
    max_execution_seconds: int


@dataclass(frozen=True)
class Decision:
    sql: str            # what runs: the checked tree, re-rendered, with forced SETTINGS
    fmt: str            # the output format, canonical name
    connect: bool       # a client's connection-time metadata query
    tables: tuple[str, ...]


def check_case(case: str | None, purpose: str | None) -> tuple[str, str]:
    """R-CASE: every query on ALPR data carries a case or event number and a purpose."""
    case, purpose = (case or "").strip(), " ".join((purpose or "").split())
    if not case or not purpose:
        raise PolicyRefused("R-CASE", "every query needs a case or event number and a purpose: set the ClickHouse "
                            "settings SQL_case and SQL_purpose (a case may be 'none' with a purpose of at least "
                            f"{MIN_PURPOSE_CHARS_WITHOUT_CASE} characters)")
    if case.lower() == "none":
        if len(purpose) < MIN_PURPOSE_CHARS_WITHOUT_CASE:
            raise PolicyRefused("R-CASE", f"without a case number (SQL_case=none) the purpose must describe the "
                                f"need in at least {MIN_PURPOSE_CHARS_WITHOUT_CASE} characters")
        return "none", purpose
    if not _CASE_RE.match(case):
        raise PolicyRefused("R-CASE", "SQL_case must be a case or event number (2-64 letters, digits, . _ / : # -) "
                            "or the word none")
    if len(purpose) < MIN_PURPOSE_CHARS:
        raise PolicyRefused("R-CASE", f"SQL_purpose must say why, in at least {MIN_PURPOSE_CHARS} characters")
    return case, purpose[:500]


def output_format(name: str | None) -> str:
    """R-FORMAT: a supported output format (canonical spelling)."""
    if not name:
        return DEFAULT_FORMAT
    fmt = FORMATS.get(name.lower())
    if fmt is None:
        raise PolicyRefused("R-FORMAT", f"output format {name} is not served by the proxy; use one of "
                            f"{', '.join(sorted(set(FORMATS.values())))}", code=73, status=400)
    return fmt


def parse_one(sql: str) -> exp.Expression:
    """R-ONE: exactly one statement that sqlglot's ClickHouse dialect parses."""
    if len(sql) > 100_000:
        raise PolicyRefused("R-ONE", "query text longer than 100000 characters", code=62, status=400)
    try:
        statements = [s for s in sqlglot.parse(sql, read="clickhouse") if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0][:200]
        raise PolicyRefused("R-ONE", f"the query does not parse: {first}", code=62, status=400) from None
    if len(statements) != 1:
        raise PolicyRefused("R-ONE", f"exactly one statement per request (got {len(statements)})", code=62, status=400)
    return statements[0]


_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "`": "`", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
            "0": "\0"}


def _unescape(value: str) -> str:
    """A query parameter's value arrives backslash-escaped (ClickHouse's escaped format)."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(_ESCAPES.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _bind(tree: exp.Expression, params: dict[str, str]) -> exp.Expression:
    """R-PARAMS: `{name:Type}` becomes CAST('<value>' AS Type) from the `param_<name>` URL parameter.

    Binding here, into the tree, means the value is a string literal the renderer
    escapes: it can never become SQL.
    """
    def replace(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Placeholder):
            return node
        name = node.name
        kind = node.args.get("kind")
        if not name or kind is None:
            raise PolicyRefused("R-PARAMS", "placeholders must be ClickHouse query parameters {name:Type}")
        if f"param_{name}" not in params:
            raise PolicyRefused("R-PARAMS", f"query parameter {name} is not set (param_{name})", code=456, status=400)
        return exp.Cast(this=exp.Literal.string(_unescape(params[f"param_{name}"])), to=kind.copy())

    return tree.transform(replace, copy=False)


def decide(sql: str, role: UserRole, database: str, limits: Limits, default_format: str | None = None,
           params: dict[str, str] | None = None) -> Decision:
    """Check the SQL against the rules for `role`; return what to run, or raise PolicyRefused."""
    tree = _bind(parse_one(sql), params or {})
    fmt_node = tree.args.get("format")
    fmt = output_format(fmt_node.name if fmt_node is not None else default_format)
    tree.set("format", None)

    if not isinstance(tree, (exp.Select, exp.SetOperation)):  # R-READONLY
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise PolicyRefused("R-READONLY", f"only SELECT queries are allowed ({kind} is not)")
    if tree.find(exp.Into) is not None:
        raise PolicyRefused("R-READONLY", "SELECT ... INTO is not allowed")

    rendered = tree.sql(dialect="clickhouse", comments=False)
    if rendered in CONNECT_QUERIES:
        return Decision(_with_limits(rendered, limits), fmt, connect=True, tables=())

    for node in tree.walk():
        if isinstance(node, (exp.Select, exp.SetOperation)) and node.args.get("settings"):
            raise PolicyRefused("R-SETTINGS", "SETTINGS clauses are not allowed; the proxy sets the query limits")

    allowed = ROLE_TABLES.get(role, {})
    cte_names = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables: list[str] = []
    denied_columns: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Table):
            name = _check_table(node, allowed, cte_names, database, role)
            if name:
                tables.append(name)
                denied_columns |= allowed[name]
        elif isinstance(node, (exp.Values, exp.Unnest, exp.Lateral)):
            raise PolicyRefused("R-TABLES", f"{node.key.upper()} as a row source is not allowed")
        elif isinstance(node, exp.In) and node.args.get("field") is not None \
                and not isinstance(node.args["field"], exp.Cast):  # a bound array parameter is a value
            raise PolicyRefused("R-TABLES", "IN <table> is not allowed; write IN (SELECT ... FROM <table>)")
        elif isinstance(node, exp.Func):
            _check_function(node)
    if not tables:
        raise PolicyRefused("R-TABLES", "the query reads no table this role may read (constant queries other "
                            "than the client's connection checks are not served)")

    _check_columns(tree, allowed, denied_columns, role)
    return Decision(_with_limits(tree.sql(dialect="clickhouse", comments=False), limits), fmt, connect=False,
                    tables=tuple(dict.fromkeys(tables)))


def _check_table(node: exp.Table, allowed: dict[str, frozenset[str]], cte_names: set[str], database: str,
                 role: UserRole) -> str | None:
    """R-TABLEFUNC, R-SYSTEM, R-TABLES; qualifies a bare table name with our database."""
    if not isinstance(node.this, exp.Identifier):
        fn = node.this.sql(dialect="clickhouse").split("(")[0] if node.this is not None else "?"
        raise PolicyRefused("R-TABLEFUNC", f"table functions are not allowed ({fn})")
    if node.args.get("catalog") is not None:
        raise PolicyRefused("R-TABLES", "three-part table names are not allowed")
    name, db = node.name, node.db
    if not db and name in cte_names:
        return None
    if db.lower() in ("system", "information_schema"):
        raise PolicyRefused("R-SYSTEM", f"system tables are not served ({db}.{name}); only the client's "
                            "connection checks may read system.settings")
    if db and db != database:
        raise PolicyRefused("R-TABLES", f"database {db} is not served; tables are in {database}")
    if name not in allowed:
        may = ", ".join(sorted(allowed)) or "none"
        raise PolicyRefused("R-TABLES", f"role {role.value.lower()} may not read table {name} (may read: {may})")
    node.set("db", exp.to_identifier(database))
    return name


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this)
    return node.sql_name()


def _check_function(node: exp.Func) -> None:
    """R-FUNCTIONS: no function that reaches other data, files, hosts or server internals."""
    name = _function_name(node).lower()
    if name.startswith(DENIED_FUNCTION_PREFIXES):
        raise PolicyRefused("R-FUNCTIONS", f"function {_function_name(node)} is not allowed")


def _check_columns(tree: exp.Expression, allowed: dict[str, frozenset[str]], denied: set[str],
                   role: UserRole) -> None:
    """R-COLUMNS: no identifier names a column this role may not read, and no * would include one."""
    if not denied:
        return
    excepted_ids = {id(i) for star in tree.find_all(exp.Star)
                    for col in (star.args.get("except_") or star.args.get("except") or [])
                    for i in col.find_all(exp.Identifier)}
    for ident in tree.find_all(exp.Identifier):
        if ident.name.lower() in denied and id(ident) not in excepted_ids:
            raise PolicyRefused("R-COLUMNS", f"role {role.value.lower()} may not read column {ident.name}")
    for star in tree.find_all(exp.Star):
        if isinstance(star.parent, exp.Count):
            continue  # count(*) reads no column values
        select = star.find_ancestor(exp.Select)
        sources = _direct_tables(select) if select is not None else []
        hidden = set().union(*(allowed.get(t, frozenset()) for t in sources)) if sources else set()
        excepted = {c.name.lower() for c in (star.args.get("except_") or star.args.get("except") or [])}
        missing = hidden - excepted
        if missing:
            cols = ", ".join(sorted(missing))
            raise PolicyRefused("R-COLUMNS", f"* would include {cols}, which role {role.value.lower()} may not "
                                f"read; name the columns or write * EXCEPT ({cols})")


def _direct_tables(select: exp.Select) -> list[str]:
    out = []
    sources = [select.args.get("from_") or select.args.get("from")] + list(select.args.get("joins") or [])
    for src in sources:
        if src is not None and isinstance(src.this, exp.Table) and isinstance(src.this.this, exp.Identifier):
            out.append(src.this.name)
    return out


def _with_limits(sql: str, limits: Limits) -> str:
    """R-LIMITS: read-only, bounded rows, bytes and time, whatever the client asked for."""
    return (f"{sql} SETTINGS readonly = 1, max_result_rows = {limits.max_result_rows}, "
            f"max_result_bytes = {limits.max_result_bytes}, result_overflow_mode = 'throw', "
            f"max_execution_time = {limits.max_execution_seconds}")
