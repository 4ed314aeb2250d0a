"""Parse one SQL text and decide whether a role may run it; produce the SQL actually run.

Consumes: the SQL a client sent, the user's role, the URL parameters it carried.
Produces: a `Decision` (the SQL to execute, regenerated from the checked syntax
tree and wrapped with forced limits, and the output format) or `PolicyRefused`
naming the rule.

The SQL is tokenised and parsed with sqlglot's ClickHouse dialect, never
pattern-matched, and every decision is taken on normalised names: identifiers
and function names are compared after unquoting and unescaping, as ClickHouse
resolves them. What runs is the checked tree rendered again without comments, so
text the parser did not see (a comment hiding a statement, a trailing SETTINGS)
cannot reach ClickHouse. Deny unless allowed: functions come from an explicit
allow-list, tables from the role's list, system tables only as the role-scoped
catalog views analysts' tools browse. Each rule has an id (R-...) that the error
names and that `docs/access-rules.md` maps to this code and to its test.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from alpr.core.errors import Refused
from alpr.core.logs import get_log
from alpr.schemas.models import UserRole

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its "falling back to Command" warnings are decided here
log = get_log(__name__)

# Tables each role may read, and the columns it may not. Nobody reads holds,
# held_reads, users, schema_migrations or dictionaries through the proxy.
ROLE_TABLES: dict[UserRole, dict[str, frozenset[str]]] = {
    UserRole.ANALYST: {"reads": frozenset({"crop_jpeg"}), "alerts": frozenset()},
    UserRole.SUPERVISOR: {"reads": frozenset(), "alerts": frozenset()},
    UserRole.AUDITOR: {"audit_log": frozenset()},
    UserRole.ADMINISTRATOR: {},
}

# What clickhouse-connect sends when it connects (ENGINEERING-NOTES), compared as
# parsed and re-rendered SQL: these, and only these, may run without a case
# number and read server facts (version, time zone, the settings list).
SETTINGS_QUERY = "SELECT name, value, readonly FROM system.settings LIMIT 10000"
CONNECT_QUERIES = frozenset({
    "SELECT VERSION(), timezone()",
    "SELECT name, value, readonly FROM system.settings LIMIT 10000",
    "SELECT 1 AS check",
    "SELECT 1",
    "SELECT version()",
    "SELECT VERSION()",
    "SELECT timezone()",
    "SELECT CURRENT_DATABASE()",  # Grafana's ClickHouse source; answered as the served database
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

# R-FUNCTIONS: the functions an analyst's query may call, by the name ClickHouse
# resolves (the canonical spelling; the query's spelling must match it exactly
# unless ClickHouse registers the name case-insensitively, CASE_INSENSITIVE).
# Anything else is refused: functions that read files, URLs, other tables,
# dictionaries, settings, headers, the server's identity or disk, or that sleep
# or generate rows, are simply not here. `tests/test_proxy_policy.py` checks
# every name and its case rule against the embedded engine's system.functions.
_FUNCTION_GROUPS: dict[str, str] = {
    "comparison and logic": """equals notEquals less greater lessOrEquals greaterOrEquals and or not xor in notIn
        like notLike ilike notILike isNull isNotNull coalesce ifNull nullIf assumeNotNull toNullable isNaN isFinite
        isInfinite""",
    "conditional": "if multiIf greatest least",
    "arithmetic": """plus minus multiply divide intDiv intDivOrZero modulo moduloOrZero mod negate abs round
        roundBankers floor ceil ceiling trunc truncate sqrt pow power exp log ln log2 log10 sign pi sin cos tan asin
        acos atan atan2 radians degrees""",
    "type conversion": """CAST accurateCastOrNull toString toFixedString toInt8 toInt16 toInt32 toInt64 toUInt8
        toUInt16 toUInt32 toUInt64 toFloat32 toFloat64 toInt32OrNull toInt64OrNull toUInt32OrNull toUInt64OrNull
        toFloat64OrNull toInt32OrZero toInt64OrZero toFloat64OrZero toDecimal32 toDecimal64 toBool toTypeName""",
    "string": """length lengthUTF8 CHAR_LENGTH lower upper lcase ucase lowerUTF8 upperUTF8 concat concatWithSeparator
        concat_ws substring substr substringUTF8 mid left right leftPad rightPad lpad rpad leftUTF8 rightUTF8 trimBoth
        trimLeft trimRight position positionCaseInsensitive locate instr startsWith endsWith replaceAll replaceOne
        replace replaceRegexpAll replaceRegexpOne reverse splitByChar splitByString splitByRegexp arrayStringConcat
        extract extractAll match multiMatchAny multiSearchAny multiSearchFirstIndex countSubstrings empty notEmpty
        format toValidUTF8 ngramDistance levenshteinDistance editDistance damerauLevenshteinDistance jaroSimilarity
        jaroWinklerSimilarity hasToken""",
    "date and time": """now now64 today yesterday toYear toQuarter toMonth toWeek toDayOfMonth toDayOfWeek toDayOfYear
        toHour toMinute toSecond toStartOfDay toStartOfHour toStartOfMinute toStartOfFiveMinutes toStartOfTenMinutes
        toStartOfFifteenMinutes toStartOfInterval toStartOfWeek toStartOfMonth toStartOfQuarter toStartOfYear toMonday
        toYYYYMM toYYYYMMDD toYYYYMMDDhhmmss toUnixTimestamp fromUnixTimestamp formatDateTime dateDiff date_diff
        DATE_DIFF dateTrunc DATE_TRUNC age addYears addMonths addWeeks addDays addHours addMinutes addSeconds
        subtractYears subtractMonths subtractWeeks subtractDays subtractHours subtractMinutes subtractSeconds
        toIntervalYear toIntervalMonth toIntervalWeek toIntervalDay toIntervalHour toIntervalMinute toIntervalSecond
        timeSlot toTimeZone toTimezone toDate toDate32 toDateTime toDateTime64 toDateOrNull toDateTimeOrNull
        toDateTime64OrNull toDateOrZero toDateTimeOrZero parseDateTimeBestEffort parseDateTimeBestEffortOrNull
        parseDateTime64BestEffort parseDateTime64BestEffortOrNull parseDateTime parseDateTimeOrNull YEAR QUARTER
        MONTH DAY HOUR MINUTE SECOND DAYOFWEEK DAYOFMONTH DAYOFYEAR""",
    "aggregate": """count sum avg min max any anyLast argMin argMax uniq uniqExact uniqCombined groupArray
        groupUniqArray quantile quantiles quantileExact median stddevPop stddevSamp varPop varSamp topK corr covarPop
        covarSamp any_value""",
    "window": "row_number rank dense_rank lagInFrame leadInFrame first_value last_value",
    "geo": """geoDistance greatCircleDistance greatCircleAngle pointInPolygon pointInEllipses geohashEncode
        geohashDecode geoToH3 h3ToGeo h3ToParent h3kRing h3GetResolution h3IsValid h3Distance""",
    "arrays and tuples": """array has hasAny hasAll indexOf arrayElement arrayMap arrayFilter arrayExists arrayAll
        arrayCount arraySum arrayMin arrayMax arrayAvg arraySort arrayReverseSort arrayDistinct arrayUniq arraySlice
        arrayConcat arrayFirst arrayLast arrayJoin arrayEnumerate tuple tupleElement map""",
}
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(n for group in _FUNCTION_GROUPS.values() for n in group.split())
# Per role: auditors also read the audit events' details map; administrators read no data.
ROLE_FUNCTIONS: dict[UserRole, frozenset[str]] = {
    UserRole.ANALYST: ALLOWED_FUNCTIONS,
    UserRole.SUPERVISOR: ALLOWED_FUNCTIONS,
    UserRole.AUDITOR: ALLOWED_FUNCTIONS | {"mapKeys", "mapValues", "mapContains"},
    UserRole.ADMINISTRATOR: ALLOWED_FUNCTIONS,  # for browsing; the role has no tables
}
# The allowed names ClickHouse registers case-insensitively (system.functions.case_insensitive),
# and the date-arithmetic forms its parser rewrites (DATE_ADD and kin, always case-insensitive).
CASE_INSENSITIVE: frozenset[str] = frozenset("""
    CAST CHAR_LENGTH DATE_TRUNC DAY DAYOFMONTH DAYOFWEEK DAYOFYEAR HOUR MINUTE MONTH QUARTER SECOND YEAR abs acos age
    any_value asin atan atan2 avg ceil ceiling coalesce concat concat_ws corr cos count countSubstrings dateDiff
    degrees dense_rank exp first_value floor greatest if ifNull instr isNull last_value lcase least left length ln
    locate log log10 log2 lower lpad max mid min mod not now now64 nullIf pi position pow power radians rank replace
    reverse right round row_number rpad sign sin sqrt substr substring sum tan today trunc truncate ucase upper
    """.split())
PARSER_DATE_FORMS = frozenset({"date_add", "date_sub", "dateadd", "datesub", "timestamp_add", "timestamp_sub",
                               "timestampadd", "timestampsub"})
_CI_LOWER = frozenset(n.lower() for n in CASE_INSENSITIVE) | PARSER_DATE_FORMS
AGGREGATES = frozenset("""count sum avg min max any anyLast argMin argMax uniq uniqExact uniqCombined groupArray
    groupUniqArray quantile quantiles quantileExact median stddevPop stddevSamp varPop varSamp topK corr covarPop
    covarSamp any_value""".split())
# Aggregate combinators that only filter or shape an allowed aggregate (no states, no merges).
COMBINATORS = ("If", "Distinct", "OrNull", "OrDefault", "Array")
# sqlglot nodes that render as SQL syntax, not as a call of a named function; their
# arguments are still checked like everything else.
_SYNTAX = (exp.Case, exp.If, exp.Cast, exp.Extract, exp.Trim, exp.Array, exp.Exists, exp.DateAdd, exp.DateSub,
           exp.TimestampAdd, exp.TimestampSub)

# Schema browsing: the system tables analysts' tools read for their catalog trees,
# answered from role-scoped views (only the databases, tables and columns the role
# may query). Columns not listed here are answered empty (their type's default).
CATALOG_COLUMNS: dict[str, frozenset[str]] = {
    "databases": frozenset({"name", "engine", "comment"}),
    "tables": frozenset({"database", "name", "engine", "is_temporary", "comment", "partition_key", "sorting_key",
                         "primary_key", "sampling_key", "total_rows", "total_bytes"}),
    "columns": frozenset({"database", "table", "name", "type", "position", "default_kind", "default_expression",
                          "comment", "is_in_partition_key", "is_in_sorting_key", "is_in_primary_key",
                          "is_in_sampling_key", "compression_codec", "character_octet_length", "numeric_precision",
                          "numeric_precision_radix", "numeric_scale", "datetime_precision"}),
}

# Hidden catalog columns answered with a placeholder instead of their type's default,
# where tools read meaning into emptiness (JDBC calls a table with no data_paths REMOTE).
CATALOG_PLACEHOLDERS = {("tables", "data_paths"): "['(not shown)']"}

# URL parameters: served ones, and the transport parameters clients send that the
# proxy accepts and ignores (each query runs alone, with the proxy's limits).
SERVED_PARAMS = frozenset({"query", "default_format", "SQL_case", "SQL_purpose", "database"})
IGNORED_PARAMS = frozenset({
    "query_id", "session_id", "session_timeout", "session_check",  # no sessions: every query runs isolated
    "wait_end_of_query", "send_progress_in_http_headers", "http_headers_progress_interval_ms",  # the proxy buffers
    "date_time_input_format",  # clickhouse-connect sends it; the proxy takes no input
    "compress", "decompress", "enable_http_compression", "http_zlib_compression_level",  # answers are uncompressed
    "output_format_arrow_string_as_string", "extremes", "client_protocol_version",
    # what clickhouse-connect adds by itself when the server reports them changeable (answers are decoded as sent)
    "cast_string_to_dynamic_use_inference", "cancel_http_readonly_queries_on_client_close",
})

MAX_QUERY_CHARS = 100_000   # a query text, not data
MAX_NESTING = 32            # brackets deep; sqlglot's recursive parser fails near 50
MAX_NODES = 20_000          # syntax-tree nodes after parsing
MAX_TABLE_SOURCES = 8       # table references in one query (there are two tables an analyst may read)
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_PRINTABLE_NAME = re.compile(r"^[\x20-\x7e]+\Z")
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_CASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:#-]{1,63}\Z")
MIN_PURPOSE_CHARS = 5
MIN_PURPOSE_CHARS_WITHOUT_CASE = 20
# Statements refused by their first word, before parsing, so the refusal says what was refused.
_STATEMENTS = frozenset({
    "INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "RENAME", "TRUNCATE", "ATTACH", "DETACH", "OPTIMIZE",
    "SYSTEM", "KILL", "GRANT", "REVOKE", "SET", "USE", "EXCHANGE", "UNDROP", "BACKUP", "RESTORE", "CHECK", "EXPLAIN",
    "WATCH", "MOVE", "REPLACE", "EXISTS", "SHOW", "DESCRIBE", "DESC", "BEGIN", "COMMIT", "ROLLBACK", "PREPARE",
    "EXECUTE", "CALL", "MERGE", "COPY", "LOAD", "UNLOCK", "LOCK", "VACUUM", "ANALYZE", "DEALLOCATE", "DECLARE",
})


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
    max_memory_bytes: int = 2 << 30


@dataclass(frozen=True)
class Catalog:
    """The columns (name, type) of system.databases, .tables and .columns in the engine behind the proxy."""

    columns: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    sql: str            # what runs: the checked tree, re-rendered, wrapped with forced SETTINGS
    fmt: str            # the output format, canonical name
    connect: bool       # a client's connection-time query
    tables: tuple[str, ...]
    browse: bool = False  # reads only the role's catalog views (no ALPR data, no case needed)


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
        raise PolicyRefused("R-FORMAT", f"output format {name!r} is not served by the proxy; use one of "
                            f"{', '.join(sorted(set(FORMATS.values())))}", code=73, status=400)
    return fmt


def check_params(params: dict[str, str], database: str) -> None:
    """R-SETTINGS (URL): a client may not pass ClickHouse settings; only served and known transport parameters."""
    for key, value in params.items():
        if key.startswith("param_") or key in IGNORED_PARAMS:
            continue
        if key not in SERVED_PARAMS:
            raise PolicyRefused("R-SETTINGS", f"URL parameter {key[:64]} is not accepted: the proxy sets every "
                                "ClickHouse setting itself (send SQL_case and SQL_purpose, query parameters as "
                                "param_<name>)", code=115, status=400)
        if key == "database" and value not in ("", database):
            raise PolicyRefused("R-TABLES", f"database {value[:64]} is not served; tables are in {database}")


def _tokens(sql: str) -> list:
    """R-SIZE, R-PARSE, R-DEPTH: tokenise (linear, no recursion) and bound the bracket nesting."""
    if len(sql) > MAX_QUERY_CHARS:
        raise PolicyRefused("R-SIZE", f"query text longer than {MAX_QUERY_CHARS} characters", code=62, status=400)
    try:
        tokens = sqlglot.Dialect.get_or_raise("clickhouse").tokenize(sql)
    except SqlglotError as exc:
        raise PolicyRefused("R-PARSE", f"the query does not parse: {str(exc).splitlines()[0][:200]}", code=62,
                            status=400) from None
    depth = deepest = 0
    for tok in tokens:
        if tok.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
            deepest = max(deepest, depth)
        elif tok.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
    if deepest > MAX_NESTING:
        raise PolicyRefused("R-DEPTH", f"brackets nested {deepest} deep; at most {MAX_NESTING}", code=167, status=400)
    if any(";" in comment for tok in tokens for comment in tok.comments or ()):
        # never run (comments are dropped), but a statement hidden in a comment is an attack, not a note
        raise PolicyRefused("R-ONE", "a comment holds a ';' (a second statement hidden in a comment?); remove it",
                            code=62, status=400)
    return tokens


def _first_word_refusal(tokens: list) -> None:
    """R-READONLY, said plainly: a statement that is not a query, or one that writes a file."""
    words = [t.text.upper() for t in tokens if t.token_type != TokenType.SEMICOLON]
    if not words:
        raise PolicyRefused("R-PARSE", "the request holds no query", code=62, status=400)
    for i, word in enumerate(words[:-1]):
        if word == "INTO" and words[i + 1] in ("OUTFILE", "TABLE", "FUNCTION"):
            raise PolicyRefused("R-READONLY", f"INTO {words[i + 1]} is not allowed: the proxy only reads, and writes "
                                "no file or table on the server")
    head = words[0]
    if head in _STATEMENTS:
        following = words[1].split()[0] if len(words) > 1 and words[1].split() else ""
        second = f" {following}" if following.isalpha() else ""
        raise PolicyRefused("R-READONLY", f"{head}{second} statements are not allowed: only SELECT queries (and "
                            "SHOW DATABASES, SHOW TABLES, DESCRIBE TABLE for browsing)")


def parse_one(sql: str, tokens: list | None = None) -> exp.Expression:
    """R-PARSE, R-ONE: exactly one statement that sqlglot's ClickHouse dialect parses."""
    tokens = _tokens(sql) if tokens is None else tokens
    _first_word_refusal(tokens)
    try:
        parser = sqlglot.Dialect.get_or_raise("clickhouse").parser()
        statements = [s for s in parser.parse(tokens, sql) if s is not None]
    except RecursionError:
        raise PolicyRefused("R-DEPTH", "the query is nested too deeply to check", code=167, status=400) from None
    except SqlglotError as exc:
        first = str(exc).splitlines()[0][:200]
        raise PolicyRefused("R-PARSE", f"the query does not parse: {first}", code=62, status=400) from None
    if len(statements) != 1:
        raise PolicyRefused("R-ONE", f"exactly one statement per request (got {len(statements)})", code=62, status=400)
    return statements[0]


# --- schema browsing: SHOW / DESCRIBE, and the catalog views

def _browse_statement(tokens: list, role: UserRole, database: str) -> str | None:
    """R-BROWSE: SHOW DATABASES, SHOW TABLES [FROM db] [LIKE 'p'], DESCRIBE [TABLE] [db.]t as catalog SELECTs."""
    toks = [t for t in tokens if t.token_type != TokenType.SEMICOLON]
    if not toks or toks[0].text.upper() not in ("SHOW", "DESCRIBE", "DESC"):
        return None
    if toks[0].text.upper() == "SHOW" and len(toks) == 2 and toks[1].token_type == TokenType.STRING:
        # sqlglot reads the rest of a SHOW as one command string: tokenise it as SQL
        toks = toks[:1] + [t for t in _tokens(toks[1].text) if t.token_type != TokenType.SEMICOLON]
    fmt = ""
    if len(toks) > 2 and toks[-2].text.upper() == "FORMAT" and _SAFE_NAME.match(toks[-1].text):
        fmt, toks = f" FORMAT {toks[-1].text}", toks[:-2]  # what clickhouse-connect appends
    sql = _browse_select(toks, role, database)
    return sql + fmt if sql else None


def _browse_select(toks: list, role: UserRole, database: str) -> str | None:
    words = [t.text.upper() for t in toks]
    if words == ["SHOW", "DATABASES"] or words == ["SHOW", "SCHEMAS"]:
        return "SELECT name FROM system.databases ORDER BY name"
    if words[0] == "SHOW":
        rest = toks[1:]
        if rest and rest[0].text.upper() == "FULL":
            rest = rest[1:]
        if not rest or rest[0].text.upper() != "TABLES":
            return None
        rest, db, pattern, negate, op = rest[1:], database, None, False, "LIKE"
        if len(rest) >= 2 and rest[0].text.upper() in ("FROM", "IN"):
            db, rest = _browse_name(rest[1]), rest[2:]
        if rest and rest[0].text.upper() == "NOT":
            negate, rest = True, rest[1:]
        if len(rest) == 2 and rest[0].text.upper() in ("LIKE", "ILIKE") and rest[1].token_type == TokenType.STRING:
            op, pattern, rest = rest[0].text.upper(), rest[1].text, []
        if rest:
            return None
        where = f"database = {exp.Literal.string(db).sql('clickhouse')}"
        if pattern is not None:
            where += f" AND name {'NOT ' if negate else ''}{op} {exp.Literal.string(pattern).sql('clickhouse')}"
        return f"SELECT name FROM system.tables WHERE {where} ORDER BY name"
    rest = toks[1:]
    if rest and rest[0].text.upper() == "TABLE":
        rest = rest[1:]
    if len(rest) == 3 and rest[1].token_type == TokenType.DOT:
        db, table = _browse_name(rest[0]), _browse_name(rest[2])
    elif len(rest) == 1:
        db, table = database, _browse_name(rest[0])
    else:
        return None
    if db != database or table not in ROLE_TABLES.get(role, {}):
        may = ", ".join(sorted(ROLE_TABLES.get(role, {}))) or "none"
        raise PolicyRefused("R-TABLES", f"role {role.value.lower()} may not read table {db}.{table} (may read: {may})")
    return ("SELECT name, type, default_kind AS default_type, default_expression, comment, "
            "compression_codec AS codec_expression, '' AS ttl_expression FROM system.columns "
            f"WHERE database = '{db}' AND table = '{table}' ORDER BY position")


def _browse_name(tok) -> str:
    name = tok.text
    if tok.token_type == TokenType.STRING or not _SAFE_NAME.match(name):
        raise PolicyRefused("R-NAMES", f"database and table names are letters, digits and _ (got {name[:64]!r})")
    return name


def catalog_view(catalog: Catalog, view: str, role: UserRole, database: str) -> exp.Expression:
    """The role-scoped stand-in for system.<view>: its columns, with only the role's rows; hidden columns empty."""
    tables = ROLE_TABLES.get(role, {})
    cols = []
    for name, ctype in catalog.columns.get(view, ()):
        if name in CATALOG_COLUMNS[view]:
            cols.append(f"`{name}`")
        elif (view, name) in CATALOG_PLACEHOLDERS:
            cols.append(f"{CATALOG_PLACEHOLDERS[view, name]} AS `{name}`")
        else:
            cols.append(f"defaultValueOfTypeName({exp.Literal.string(ctype).sql('clickhouse')}) AS `{name}`")
    if not cols or not tables:
        where = "0"
    else:
        names = ", ".join(exp.Literal.string(t).sql("clickhouse") for t in sorted(tables))
        db = exp.Literal.string(database).sql("clickhouse")
        if view == "databases":
            where = f"name = {db}"
        elif view == "tables":
            where = f"database = {db} AND name IN ({names})"
        else:
            hidden = ", ".join(f"({exp.Literal.string(t).sql('clickhouse')}, {exp.Literal.string(c).sql('clickhouse')})"
                               for t, cs in sorted(tables.items()) for c in sorted(cs))
            where = f"database = {db} AND table IN ({names})" + (f" AND (table, name) NOT IN ({hidden})" if hidden else "")
    return sqlglot.parse_one(f"SELECT {', '.join(cols) or '1 AS none'} FROM system.{view} WHERE {where}",
                             read="clickhouse")


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
        if not name or not isinstance(kind, exp.DataType):
            raise PolicyRefused("R-PARAMS", "placeholders must be ClickHouse query parameters {name:Type} of a "
                                "value type (not Identifier: names are never parameters)")
        if f"param_{name}" not in params:
            raise PolicyRefused("R-PARAMS", f"query parameter {name} is not set (param_{name})", code=456, status=400)
        return exp.Cast(this=exp.Literal.string(_unescape(params[f"param_{name}"])), to=kind.copy())

    return tree.transform(replace, copy=False)



# --- the decision

def decide(sql: str, role: UserRole, database: str, limits: Limits, default_format: str | None = None,
           params: dict[str, str] | None = None, catalog: Catalog | None = None) -> Decision:
    """Check the SQL against the rules for `role`; return what to run, or raise PolicyRefused."""
    try:
        return _decide(sql, role, database, limits, default_format, params or {}, catalog)
    except RecursionError:
        raise PolicyRefused("R-DEPTH", "the query is nested too deeply to check", code=167, status=400) from None
    except (SqlglotError, ValueError, TypeError, AttributeError, KeyError) as exc:
        # sqlglot built a tree the checks cannot read (seen: a `?` placeholder where a table name goes):
        # what cannot be checked does not run
        log.warning("sqlpolicy.unreadable_tree", error=type(exc).__name__, detail=str(exc)[:200])
        raise PolicyRefused("R-PARSE", f"the query could not be checked ({type(exc).__name__}); write it plainly",
                            code=62, status=400) from None


def _decide(sql: str, role: UserRole, database: str, limits: Limits, default_format: str | None,
            params: dict[str, str], catalog: Catalog | None) -> Decision:
    check_params(params, database)
    tokens = _tokens(sql)
    browse_sql = _browse_statement(tokens, role, database)
    if browse_sql is not None:
        return _decide(browse_sql, role, database, limits, default_format, {}, catalog)
    tree = parse_one(sql, tokens)
    if any(t.token_type == TokenType.L_BRACE for t in tokens):  # {name:Type} placeholders
        tree = _bind(tree, params)
    fmt_node = tree.args.get("format")
    fmt = output_format(fmt_node.name if fmt_node is not None else default_format)
    tree.set("format", None)

    if not isinstance(tree, (exp.Select, exp.SetOperation)):  # R-READONLY
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise PolicyRefused("R-READONLY", f"only SELECT queries are allowed ({kind[:40]} is not)")

    nodes = list(tree.walk())
    if len(nodes) > MAX_NODES:
        raise PolicyRefused("R-DEPTH", f"the query has {len(nodes)} syntax nodes; at most {MAX_NODES}", code=168,
                            status=400)
    for node in nodes:
        if isinstance(node, exp.Identifier):
            _normalise_identifier(node)
        elif isinstance(node, exp.Anonymous) and isinstance(node.this, exp.Identifier):
            _normalise_identifier(node.this)
            node.set("this", node.this.name)  # rendered bare: what runs is the name that was checked

    # only a query with no table, or on system.settings, can be one of the client's connection checks
    maybe_connect = all(t.db == "system" and t.name == "settings" for t in tree.find_all(exp.Table))
    rendered = tree.sql(dialect="clickhouse", comments=False) if maybe_connect else ""
    current = list(tree.find_all(exp.CurrentDatabase))
    for node in current:  # each query runs alone: the "current" database is the served one
        node.replace(exp.Literal.string(database))
    if rendered in CONNECT_QUERIES:
        run = tree.sql(dialect="clickhouse", comments=False)
        if rendered == SETTINGS_QUERY:
            # Report every setting as changeable: a client then sends the setting it was asked to,
            # and the proxy refuses it (R-SETTINGS) with an audit event, instead of the client
            # refusing on its own where nobody sees it.
            run = "SELECT name, value, toUInt8(0) AS readonly FROM system.settings LIMIT 10000"
        # the settings list is about 2,000 rows: a proxy configured for small results must still let clients connect
        own = Limits(max(limits.max_result_rows, 10_000), max(limits.max_result_bytes, 16 << 20),
                     limits.max_execution_seconds, limits.max_memory_bytes)
        return Decision(_with_limits(run, own), fmt, connect=True, tables=())
    if current:
        nodes = list(tree.walk())

    allowed = ROLE_TABLES.get(role, {})
    functions = ROLE_FUNCTIONS.get(role, frozenset())
    cte_names = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables: list[str] = []
    views: list[exp.Table] = []
    denied_columns: set[str] = set()
    for node in nodes:
        if node.args.get("settings"):
            raise PolicyRefused("R-SETTINGS", "SETTINGS clauses are not allowed; the proxy sets the query limits")
        if node is not tree and isinstance(node, (exp.Select, exp.SetOperation, exp.Subquery)) \
                and node.args.get("format") is not None:
            raise PolicyRefused("R-FORMAT", "FORMAT belongs at the end of the query only")
        if isinstance(node, exp.Into):
            raise PolicyRefused("R-READONLY", "SELECT ... INTO is not allowed")
        if isinstance(node, exp.Command):
            raise PolicyRefused("R-PARSE", "part of the query is not SQL the proxy can check", code=62, status=400)
        if isinstance(node, exp.Table):
            kind = _check_table(node, allowed, cte_names, database, role, catalog)
            if kind == "view":
                views.append(node)
            elif kind:
                tables.append(kind)
                denied_columns |= allowed[kind]
        elif isinstance(node, (exp.Values, exp.Unnest, exp.Lateral)):
            raise PolicyRefused("R-TABLES", f"{node.key.upper()} as a row source is not allowed")
        elif isinstance(node, exp.In) and node.args.get("field") is not None \
                and not isinstance(node.args["field"], exp.Cast):  # a bound array parameter is a value
            raise PolicyRefused("R-TABLES", "IN <table> is not allowed; write IN (SELECT ... FROM <table>)")
        elif isinstance(node, exp.Func):
            _check_function(node, functions)
        elif isinstance(node, exp.Column) and node.name.startswith("_"):
            raise PolicyRefused("R-COLUMNS", f"virtual column {node.name[:64]} is not served (_part, _path and the "
                                "like describe the server's storage, not the reads)")
        elif isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            raise PolicyRefused("R-FUNCTIONS", "qualified function names (db.function) are not allowed")
    if len(tables) + len(views) > MAX_TABLE_SOURCES:
        raise PolicyRefused("R-LIMITS", f"the query reads {len(tables) + len(views)} tables; at most "
                            f"{MAX_TABLE_SOURCES} (a cross join of many tables is a way to keep the engine busy)")
    if not tables and not views:
        raise PolicyRefused("R-TABLES", "the query reads no table this role may read (constant queries other "
                            "than the client's connection checks are not served)")

    _check_columns(tree, allowed, denied_columns, role)
    if views:
        _check_rendered(tree.sql(dialect="clickhouse", comments=False), functions)  # before the stand-ins' SQL
    for node in views:  # after every check: the stand-in's own SQL is the proxy's, not the caller's
        alias = node.alias or node.name
        node.replace(exp.Subquery(this=catalog_view(catalog, node.name, role, database),
                                  alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))))
    # the last use of the tree: rendered in place (sqlglot would copy it first, a third of the time here)
    sql_out = sqlglot.Dialect.get_or_raise("clickhouse").generate(tree, copy=False, comments=False)
    if not views:
        _check_rendered(sql_out, functions)
    return Decision(_with_limits(sql_out, limits), fmt, connect=False,
                    tables=tuple(dict.fromkeys(tables + [f"system.{v.name}" for v in views])), browse=not tables)


_TYPE_TOKENS = frozenset(sqlglot.Dialect.get_or_raise("clickhouse").parser_class.TYPE_TOKENS)
_SYNTAX_WORDS = frozenset("""IN EXISTS CAST EXTRACT TRIM OVER USING AS INTERVAL AND OR NOT ON FROM JOIN SELECT WHERE
    HAVING BY THEN ELSE WHEN CASE IS LIKE ILIKE BETWEEN ALL ANY DISTINCT UNION EXCEPT INTERSECT LIMIT OFFSET WITH
    GLOBAL PREWHERE FILTER WINDOW QUALIFY DATE_ADD DATE_SUB""".split())


def _check_rendered(sql: str, allowed: frozenset[str] = ALLOWED_FUNCTIONS) -> None:
    """R-FUNCTIONS, R-ONE, R-SETTINGS on the text that will run, read the way ClickHouse reads it.

    The checks above walk sqlglot's tree; ClickHouse parses the rendered text. Where
    the two parsers disagree (a column rendered right before a bracket reads as a
    call), the text could call what the tree never held: every word followed by a
    bracket must be an allowed function, a type or SQL syntax; no statement
    separator, SETTINGS, FORMAT or OUTFILE may appear outside strings.
    """
    tokens = sqlglot.Dialect.get_or_raise("clickhouse").tokenize(sql)
    for tok, nxt in zip(tokens, tokens[1:] + [None]):
        word = tok.text
        if tok.token_type == TokenType.SEMICOLON:
            raise PolicyRefused("R-ONE", "the checked query renders as more than one statement", code=62, status=400)
        if tok.token_type in (TokenType.STRING, TokenType.NUMBER) or not _SAFE_NAME.match(word):
            continue
        if nxt is not None and nxt.token_type == TokenType.L_PAREN:
            if tok.token_type in _TYPE_TOKENS or word.upper() in _SYNTAX_WORDS or function_allowed(word, allowed):
                continue
            raise PolicyRefused("R-FUNCTIONS", f"function {word[:64]} is not on the proxy's allow-list (as the "
                                "engine would read the checked query)")
        if tok.token_type in (TokenType.SETTINGS, TokenType.FORMAT) or word.upper() == "OUTFILE":
            raise PolicyRefused("R-SETTINGS", f"{word.upper()} may not appear in the checked query")


def _normalise_identifier(ident: exp.Identifier) -> None:
    """R-NAMES: a name compared as ClickHouse reads it (sqlglot has undone quotes and \\x escapes).

    What is left must be printable ASCII without backslashes or quotes: an escape
    sqlglot does not know (\\u0069) or an invisible character could make the
    engine read a different name than the one checked.
    """
    name = ident.this
    if not isinstance(name, str):
        return
    if not name or not _PRINTABLE_NAME.match(name) or any(c in name for c in "\\`\"'"):
        raise PolicyRefused("R-NAMES", f"name {name[:64]!r} has escapes, quotes or characters outside printable "
                            "ASCII; write names plainly")
    if not _SAFE_NAME.match(name):
        ident.set("quoted", True)


def _check_table(node: exp.Table, allowed: dict[str, frozenset[str]], cte_names: set[str], database: str,
                 role: UserRole, catalog: Catalog | None) -> str | None:
    """R-TABLEFUNC, R-SYSTEM, R-TABLES, R-BROWSE; qualifies a bare table name with our database.

    Returns the table name, "view" for a catalog view, or None for a CTE name.
    """
    if not isinstance(node.this, exp.Identifier):
        fn = node.this.sql(dialect="clickhouse").split("(")[0] if node.this is not None else "?"
        raise PolicyRefused("R-TABLEFUNC", f"table functions are not allowed ({fn[:64]})")
    if node.args.get("catalog") is not None:
        raise PolicyRefused("R-TABLES", "three-part table names are not allowed")
    name, db = node.name, node.db
    if not db and name in cte_names and _cte_in_scope(node, name):
        return None
    if db == "system" and name in CATALOG_COLUMNS and catalog is not None:
        return "view"
    if db.lower() in ("system", "information_schema"):
        raise PolicyRefused("R-SYSTEM", f"system tables are not served ({db}.{name}); tools may browse "
                            "system.databases, system.tables and system.columns (the role's own)")
    if db and db != database:
        raise PolicyRefused("R-TABLES", f"database {db} is not served; tables are in {database}")
    if name not in allowed:
        may = ", ".join(sorted(allowed)) or "none"
        raise PolicyRefused("R-TABLES", f"role {role.value.lower()} may not read table {name} (may read: {may})")
    node.set("db", exp.to_identifier(database))
    return name


def _cte_in_scope(node: exp.Expression, name: str) -> bool:
    """A bare name is a CTE only where an enclosing WITH defines it (else it would be read as a table)."""
    parent = node.parent
    while parent is not None:
        with_ = parent.args.get("with_") or parent.args.get("with")
        if with_ is not None and any(cte.alias_or_name == name for cte in with_.expressions):
            return True
        parent = parent.parent
    return False


def function_allowed(name: str, allowed: frozenset[str] = ALLOWED_FUNCTIONS) -> bool:
    """R-FUNCTIONS: the canonical spelling, or any spelling of a name ClickHouse resolves case-insensitively."""
    if name in allowed or name.lower() in _CI_LOWER:
        return True
    for suffix in COMBINATORS:  # sumIf, uniqExactIf, countDistinct, groupArrayIf ...
        if name.endswith(suffix) and len(name) > len(suffix):
            base = name[: -len(suffix)]
            if base in AGGREGATES or (base.lower() in _CI_LOWER and base.lower() in {a.lower() for a in AGGREGATES}):
                return True
            if function_allowed(base, allowed) and any(base.endswith(s) for s in COMBINATORS):
                return True
    return False


def _called_name(node: exp.Func) -> str | None:
    """The name ClickHouse will resolve for this call, as it will be rendered; None for SQL syntax."""
    if isinstance(node, (*_SYNTAX, exp.Connector, exp.Binary, exp.Unary, exp.Predicate)):
        return None  # AND/OR/XOR and operators: their operands are checked on their own
    if isinstance(node, exp.Anonymous):
        return node.this if isinstance(node.this, str) else ""
    if isinstance(node, (exp.AnonymousAggFunc, exp.CombinedAggFunc, exp.ParameterizedAgg,
                         exp.CombinedParameterizedAgg)):
        name = node.this
        return name if isinstance(name, str) else node.name
    m = _CALL.match(node.sql(dialect="clickhouse", comments=False))
    return m.group(1) if m else ""


def _check_function(node: exp.Func, allowed: frozenset[str]) -> None:
    """R-FUNCTIONS: only functions on the role's allow-list, decided on the normalised name."""
    name = _called_name(node)
    if name is None:
        return
    if not name or not _SAFE_NAME.match(name) or not function_allowed(name, allowed):
        shown = name or type(node).__name__
        raise PolicyRefused("R-FUNCTIONS", f"function {shown[:64]} is not on the proxy's allow-list (string, date, "
                            "arithmetic, aggregate, conditional, geo and array functions; see docs/access-rules.md)")


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
        # exact names: ClickHouse matches EXCEPT columns case-sensitively and silently ignores a name that
        # matches nothing, so `* EXCEPT (CROP_JPEG)` returned crop_jpeg (measured)
        excepted = {c.name for c in (star.args.get("except_") or star.args.get("except") or [])
                    if isinstance(c, exp.Column)}
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
    """R-LIMITS: read-only, bounded rows, bytes, time and memory, whatever the client asked for.

    The checked query runs as a subquery: a SETTINGS clause after a UNION binds to
    its last SELECT only, and ClickHouse then did not enforce max_result_rows on
    the whole result (measured: `... UNION ALL SELECT 1` returned 100,101 rows
    under a limit of 10); on an outer SELECT it covers everything.
    """
    return (f"SELECT * FROM ({sql}) SETTINGS readonly = 1, "
            f"max_result_rows = {limits.max_result_rows}, max_result_bytes = {limits.max_result_bytes}, "
            "result_overflow_mode = 'throw', "
            f"max_execution_time = {limits.max_execution_seconds}, timeout_overflow_mode = 'throw', "
            f"max_memory_usage = {limits.max_memory_bytes}, "
            "max_ast_depth = 200, max_ast_elements = 100000, max_expanded_ast_elements = 200000, "  # a second wall behind R-DEPTH
            "max_subquery_depth = 20, "
            "use_query_cache = 0")  # a cached result must never cross from one user to another
