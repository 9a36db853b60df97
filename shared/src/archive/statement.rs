//! What a statement is, as PostgreSQL's own parser reads it, and whether the provider's
//! SQL may hold it.
//!
//! Every statement the receiver sends on the provider's behalf is parsed here first with
//! the parser of PostgreSQL itself (the `pg_query` crate embeds it), with the
//! `standard_conforming_strings` setting the statement is applied with. Word matching
//! can be fooled by a comment (`/**/commit`) or a string the server reads differently;
//! the parse tree cannot. What the parser says is then matched against the shapes Slony
//! writes ([`Statement`]), and anything else against the DDL rules ([`Rules::check_ddl`]):
//! only statement kinds an EXECUTE SCRIPT of replicated tables holds (an allowlist), and
//! among them no transaction control, no role or session changes, no COPY to or from
//! files or programs, no `ALTER SYSTEM`, no role or privilege statements, no server
//! administration, no reference to the system catalogs or to the cluster's own schema,
//! no call of a function that reads files, runs SQL text or changes settings, and, unless
//! the operator allows them, no `DO` blocks, no function or language definitions and
//! nothing that makes a function run later (operators, aggregates, casts, triggers).
//!
//! The receiver also sends each statement in its own extended-protocol message, which the
//! server refuses to run if it holds more than one statement: even a disagreement between
//! the splitter and the server cannot smuggle a second statement in.

use pg_query::protobuf::{self, node::Node as N};
use pg_query::ParserOptions;
use serde_json::Value;
use std::fmt;

/// How string literals are read (`standard_conforming_strings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strings {
    /// `standard_conforming_strings = on`: a backslash is an ordinary character in `'...'`.
    Standard,
    /// `standard_conforming_strings = off`: a backslash escapes in `'...'` (Slony-I
    /// before 2.2 wrote its statements for such servers).
    Escaped,
}

/// What an operator allows in DDL beyond the default rules (per cluster, in the config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowances {
    /// `DO` blocks.
    pub do_blocks: bool,
    /// `CREATE FUNCTION`/`PROCEDURE`, `ALTER FUNCTION`, `CREATE TRANSFORM`.
    pub functions: bool,
    /// `CREATE LANGUAGE`.
    pub languages: bool,
}

/// An allowance a statement made use of (the applier logs each use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// A `DO` block.
    DoBlock,
    /// A function or procedure definition.
    Function,
    /// A language definition.
    Language,
}

impl fmt::Display for Allowance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Allowance::DoBlock => "a DO block",
            Allowance::Function => "a function definition",
            Allowance::Language => "a language definition",
        })
    }
}

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// PostgreSQL's parser does not accept the text.
    NotSql(String),
    /// The text holds more than one statement where one is expected.
    SeveralStatements(usize),
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `PREPARE TRANSACTION` ...
    TransactionControl,
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, `RESET`, `DISCARD`, or `SET` of a setting
    /// Slony does not set.
    SessionChange(String),
    /// COPY to or from a server file or program.
    CopyFileOrProgram,
    /// COPY where the archive's grammar has none.
    Copy,
    /// `ALTER SYSTEM`.
    AlterSystem,
    /// Roles, grants, owners, user mappings, security labels.
    RoleOrPrivilege(&'static str),
    /// Extensions, LOAD, foreign servers, databases, tablespaces, subscriptions, VACUUM,
    /// CHECKPOINT, prepared statements, cursors, LISTEN.
    Administration(&'static str),
    /// A `DO` block, not allowed by the config.
    DoBlock,
    /// A function definition, not allowed by the config.
    FunctionDefinition,
    /// A language definition, not allowed by the config.
    LanguageDefinition,
    /// A call of a function that reads files, runs SQL text, changes settings or signals
    /// backends.
    DeniedFunction(String),
    /// A reference to a system catalog.
    Catalog(String),
    /// A reference to the cluster's own schema (the replica's position lives there).
    ClusterSchema,
    /// A row change that is not plain constants into an ordinary table.
    RowChange(&'static str),
    /// Not part of the archive's grammar at this point.
    Grammar(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotSql(m) => write!(f, "PostgreSQL's parser does not accept it ({m})"),
            Refusal::SeveralStatements(n) => {
                write!(f, "it holds {n} statements where one is expected")
            }
            Refusal::TransactionControl => f.write_str(
                "transaction control is not allowed: the receiver owns the transaction",
            ),
            Refusal::SessionChange(what) => write!(
                f,
                "role or session changes are not allowed ({what}); only SET search_path and SET session_replication_role are"
            ),
            Refusal::CopyFileOrProgram => {
                f.write_str("COPY to or from a server file or program is not allowed")
            }
            Refusal::Copy => f.write_str("COPY is not allowed here"),
            Refusal::AlterSystem => f.write_str("ALTER SYSTEM is not allowed"),
            Refusal::RoleOrPrivilege(what) => {
                write!(f, "role and privilege statements are not allowed ({what})")
            }
            Refusal::Administration(what) => write!(
                f,
                "{what} is not allowed: an EXECUTE SCRIPT of replicated tables does not need it"
            ),
            Refusal::DoBlock => f.write_str(
                "DO blocks are not allowed (an operator may allow them: [sql] allow = [\"do\"])",
            ),
            Refusal::FunctionDefinition => f.write_str(
                "function definitions are not allowed (an operator may allow them: [sql] allow = [\"functions\"])",
            ),
            Refusal::LanguageDefinition => f.write_str(
                "language definitions are not allowed (an operator may allow them: [sql] allow = [\"languages\"])",
            ),
            Refusal::DeniedFunction(name) => write!(
                f,
                "calling {name}() is not allowed: it reads files, runs SQL text, changes settings or signals the server"
            ),
            Refusal::Catalog(name) => {
                write!(f, "the system catalogs may not be touched ({name})")
            }
            Refusal::ClusterSchema => f.write_str(
                "the cluster's own schema may not be touched: it holds the replica's position",
            ),
            Refusal::RowChange(why) => write!(f, "not a row change Slony writes: {why}"),
            Refusal::Grammar(what) => f.write_str(what),
        }
    }
}

/// A literal argument of a Slony function call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// A string constant, as the server reads it.
    Text(String),
    /// An integer constant.
    Integer(i64),
}

impl Literal {
    /// The value as text (what the function receives).
    pub fn as_text(&self) -> String {
        match self {
            Literal::Text(s) => s.clone(),
            Literal::Integer(i) => i.to_string(),
        }
    }
}

/// A table, as named in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its schema (empty when unqualified).
    pub schema: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.schema.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}.{}", self.schema, self.name)
        }
    }
}

/// What a statement is, for the archive grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// Nothing but comments and whitespace.
    Empty,
    /// `set session_replication_role to replica`.
    ReplicaRole,
    /// `start transaction` / `begin`, without options.
    Begin,
    /// `commit` / `end`, without options.
    Commit,
    /// `select <schema>.<function>(<constants>)`: the calls Slony writes.
    Call {
        /// The function's schema, as the server reads it.
        schema: String,
        /// The function's name, lower case.
        function: String,
        /// Its arguments.
        args: Vec<Literal>,
    },
    /// `COPY <table> (<columns>) FROM STDIN`, without options.
    CopyIn {
        /// The table.
        table: Table,
        /// The column list, as the server reads it.
        columns: Vec<String>,
    },
    /// `vacuum analyze <table>` (the tracking-table VACUUM).
    VacuumAnalyze(Table),
    /// `analyze <table>`.
    Analyze(Table),
    /// `delete from <table>` with no condition (before an initial COPY).
    DeleteAll(Table),
    /// `insert`, `update` or `delete` of constants on one table (Slony-I before 2.2).
    RowChange(Table),
    /// Anything else: judged by [`Rules::check_ddl`].
    Other,
}

/// A statement as PostgreSQL's parser reads it.
pub struct Parsed {
    /// The parse tree.
    tree: protobuf::ParseResult,
    /// The length of the text it was parsed from.
    text_len: usize,
}

/// The longest DDL statement checked (and so applied).
pub const MAX_DDL: usize = 64 * 1024;

impl fmt::Debug for Parsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Parsed({} statements)", self.tree.stmts.len())
    }
}

/// Parses `sql` with PostgreSQL's parser, reading strings the way `strings` says.
pub fn parse(sql: &str, strings: Strings) -> Result<Parsed, Refusal> {
    if sql.contains('\0') {
        return Err(Refusal::NotSql("a NUL byte in the text".into()));
    }
    let options = match strings {
        Strings::Standard => ParserOptions::DEFAULT,
        Strings::Escaped => ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS,
    };
    let result = pg_query::parse(sql, options).map_err(|e| Refusal::NotSql(e.to_string()))?;
    Ok(Parsed {
        tree: result.protobuf,
        text_len: sql.len(),
    })
}

/// What PostgreSQL's parser says of a statement, in the terms the archive grammar asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The statement ([`Parsed::statement`]).
    pub statement: Result<Statement, Refusal>,
    /// Whether it is a `COPY ... FROM STDIN` of any options ([`Parsed::is_copy_from_stdin`]).
    pub copy_from_stdin: bool,
}

/// Statements longer than this are not remembered.
const REMEMBERED_LEN: usize = 512;
/// How many statements are remembered before the memory starts afresh (a few MB at
/// most: slon's variable statements are two per archive, the others the same in all).
const REMEMBERED: usize = 4096;

type Remembered = std::collections::HashMap<(Strings, String), Shape>;

/// [`parse`], then [`Parsed::statement`] and [`Parsed::is_copy_from_stdin`]: the
/// parser's verdict on `sql` read as `strings` says, from memory when the same text was
/// parsed lately.
///
/// The verdict is a function of the text and the setting alone, and slon writes the
/// same statements into every archive (the transaction, the COPY header, the VACUUM);
/// each archive is also read twice, checked when it arrives and checked again as it is
/// applied. With the last texts remembered, most statements meet the parser once. A
/// DDL statement's verdict is [`Statement::Other`], which needs the parse tree itself:
/// such a text is parsed again by whoever judges it.
pub fn judge(sql: &str, strings: Strings) -> Result<Shape, Refusal> {
    static MEMORY: std::sync::OnceLock<std::sync::Mutex<Remembered>> = std::sync::OnceLock::new();
    let memory = MEMORY.get_or_init(Default::default);
    let key = (sql.len() <= REMEMBERED_LEN).then(|| (strings, sql.to_string()));
    if let Some(key) = &key {
        if let Some(shape) = memory.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(shape);
        }
    }
    let parsed = parse(sql, strings)?;
    let shape = Shape {
        statement: parsed.statement(),
        copy_from_stdin: parsed.is_copy_from_stdin(),
    };
    if let Some(key) = key {
        if let Ok(mut m) = memory.lock() {
            if m.len() >= REMEMBERED {
                m.clear();
            }
            m.insert(key, shape.clone());
        }
    }
    Ok(shape)
}

impl Parsed {
    /// How many statements the text holds.
    pub fn len(&self) -> usize {
        self.tree.stmts.len()
    }

    /// Whether the text holds no statement at all.
    pub fn is_empty(&self) -> bool {
        self.tree.stmts.is_empty()
    }

    /// Whether the text is one `COPY ... FROM STDIN` (of any options): its data follows.
    pub fn is_copy_from_stdin(&self) -> bool {
        matches!(
            self.tree.stmts.as_slice(),
            [one] if matches!(
                one.stmt.as_ref().and_then(|n| n.node.as_ref()),
                Some(N::CopyStmt(c)) if c.is_from && !c.is_program && c.filename.is_empty()
            )
        )
    }

    /// The tables the text's single statement drops, when it is exactly a `DROP TABLE`
    /// of schema-qualified tables (`IF EXISTS` or not, without `CASCADE`); `None` for
    /// anything else.
    pub fn dropped_tables(&self) -> Option<Vec<(String, String)>> {
        let [one] = self.tree.stmts.as_slice() else {
            return None;
        };
        let Some(N::DropStmt(d)) = one.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            return None;
        };
        if d.remove_type != protobuf::ObjectType::ObjectTable as i32
            || d.behavior == protobuf::DropBehavior::DropCascade as i32
        {
            return None;
        }
        let mut out = Vec::new();
        for object in &d.objects {
            let Some(N::List(list)) = object.node.as_ref() else {
                return None;
            };
            let names: Option<Vec<&str>> = list
                .items
                .iter()
                .map(|i| match i.node.as_ref() {
                    Some(N::String(s)) => Some(s.sval.as_str()),
                    _ => None,
                })
                .collect();
            match names?.as_slice() {
                [schema, table] => out.push((schema.to_string(), table.to_string())),
                _ => return None,
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// What the text's single statement is; refused when it holds several.
    pub fn statement(&self) -> Result<Statement, Refusal> {
        let node = match self.tree.stmts.as_slice() {
            [] => return Ok(Statement::Empty),
            [one] => one.stmt.as_ref().and_then(|n| n.node.as_ref()),
            many => return Err(Refusal::SeveralStatements(many.len())),
        };
        Ok(node.map(shape).unwrap_or(Statement::Other))
    }
}

fn node(n: &protobuf::Node) -> Option<&N> {
    n.node.as_ref()
}

fn string(n: &protobuf::Node) -> Option<&str> {
    match node(n)? {
        N::String(s) => Some(&s.sval),
        _ => None,
    }
}

fn table(r: &protobuf::RangeVar) -> Table {
    Table {
        schema: r.schemaname.clone(),
        name: r.relname.clone(),
    }
}

/// The shapes Slony writes; `Other` for the rest.
fn shape(stmt: &N) -> Statement {
    use protobuf::TransactionStmtKind as T;
    match stmt {
        N::VariableSetStmt(s)
            if s.name == "session_replication_role"
                && s.kind == protobuf::VariableSetKind::VarSetValue as i32
                && !s.is_local =>
        {
            match s.args.as_slice() {
                [a] if const_text(a).as_deref() == Some("replica") => Statement::ReplicaRole,
                _ => Statement::Other,
            }
        }
        N::TransactionStmt(t) if t.options.is_empty() && !t.chain => {
            if t.kind == T::TransStmtBegin as i32 || t.kind == T::TransStmtStart as i32 {
                Statement::Begin
            } else if t.kind == T::TransStmtCommit as i32 {
                Statement::Commit
            } else {
                Statement::Other
            }
        }
        N::SelectStmt(s) => call(s).unwrap_or(Statement::Other),
        N::CopyStmt(c)
            if c.is_from
                && !c.is_program
                && c.filename.is_empty()
                && c.options.is_empty()
                && c.where_clause.is_none()
                && c.query.is_none() =>
        {
            let Some(rel) = &c.relation else {
                return Statement::Other;
            };
            let columns: Option<Vec<String>> = c
                .attlist
                .iter()
                .map(|a| string(a).map(str::to_string))
                .collect();
            match columns {
                Some(columns) if rel.catalogname.is_empty() => Statement::CopyIn {
                    table: table(rel),
                    columns,
                },
                _ => Statement::Other,
            }
        }
        N::VacuumStmt(v) => {
            let [rel] = v.rels.as_slice() else {
                return Statement::Other;
            };
            let Some(N::VacuumRelation(vr)) = node(rel) else {
                return Statement::Other;
            };
            let Some(r) = &vr.relation else {
                return Statement::Other;
            };
            if !vr.va_cols.is_empty() || !r.catalogname.is_empty() {
                return Statement::Other;
            }
            let opts: Vec<&str> = v
                .options
                .iter()
                .filter_map(|o| match node(o) {
                    Some(N::DefElem(d)) if d.arg.is_none() => Some(d.defname.as_str()),
                    _ => None,
                })
                .collect();
            if opts.len() != v.options.len() {
                return Statement::Other;
            }
            match (v.is_vacuumcmd, opts.as_slice()) {
                (true, ["analyze"]) => Statement::VacuumAnalyze(table(r)),
                (false, []) => Statement::Analyze(table(r)),
                _ => Statement::Other,
            }
        }
        N::DeleteStmt(d)
            if d.where_clause.is_none()
                && d.using_clause.is_empty()
                && d.returning_clause.is_none()
                && d.with_clause.is_none() =>
        {
            match &d.relation {
                Some(r) if r.catalogname.is_empty() => Statement::DeleteAll(table(r)),
                _ => Statement::Other,
            }
        }
        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) => match row_change(stmt) {
            Some(t) => Statement::RowChange(t),
            None => Statement::Other,
        },
        _ => Statement::Other,
    }
}

/// A constant string, as the parser read it.
fn const_text(n: &protobuf::Node) -> Option<String> {
    match node(n)? {
        N::AConst(c) => match c.val.as_ref()? {
            protobuf::a_const::Val::Sval(s) => Some(s.sval.clone()),
            _ => None,
        },
        N::String(s) => Some(s.sval.clone()),
        _ => None,
    }
}

fn literal(n: &protobuf::Node) -> Option<Literal> {
    match node(n)? {
        N::AConst(c) if !c.isnull => match c.val.as_ref()? {
            protobuf::a_const::Val::Sval(s) => Some(Literal::Text(s.sval.clone())),
            protobuf::a_const::Val::Ival(i) => Some(Literal::Integer(i64::from(i.ival))),
            // Integers beyond int4 come as "float" text: keep them if they are integers.
            protobuf::a_const::Val::Fval(f) => f.fval.parse().ok().map(Literal::Integer),
            _ => None,
        },
        _ => None,
    }
}

/// `select schema.function(constants)` with nothing else in the query.
fn call(s: &protobuf::SelectStmt) -> Option<Statement> {
    let plain = s.distinct_clause.is_empty()
        && s.into_clause.is_none()
        && s.from_clause.is_empty()
        && s.where_clause.is_none()
        && s.group_clause.is_empty()
        && s.having_clause.is_none()
        && s.window_clause.is_empty()
        && s.values_lists.is_empty()
        && s.sort_clause.is_empty()
        && s.limit_offset.is_none()
        && s.limit_count.is_none()
        && s.locking_clause.is_empty()
        && s.with_clause.is_none()
        && s.larg.is_none()
        && s.rarg.is_none()
        && s.op == protobuf::SetOperation::SetopNone as i32;
    if !plain {
        return None;
    }
    let [target] = s.target_list.as_slice() else {
        return None;
    };
    let Some(N::ResTarget(rt)) = node(target) else {
        return None;
    };
    if !rt.name.is_empty() || !rt.indirection.is_empty() {
        return None;
    }
    let Some(N::FuncCall(f)) = rt.val.as_deref().and_then(node) else {
        return None;
    };
    if !f.agg_order.is_empty()
        || f.agg_filter.is_some()
        || f.over.is_some()
        || f.agg_star
        || f.agg_distinct
        || f.func_variadic
        || f.agg_within_group
    {
        return None;
    }
    let [schema, function] = f.funcname.as_slice() else {
        return None;
    };
    let args: Option<Vec<Literal>> = f.args.iter().map(literal).collect();
    Some(Statement::Call {
        schema: string(schema)?.to_string(),
        function: string(function)?.to_ascii_lowercase(),
        args: args?,
    })
}

/// The table of an insert, update or delete of constants; `None` for anything richer.
fn row_change(stmt: &N) -> Option<Table> {
    let (rel, extra) = match stmt {
        N::InsertStmt(i) => (
            i.relation.as_ref()?,
            i.on_conflict_clause.is_some()
                || i.returning_clause.is_some()
                || i.with_clause.is_some()
                || i.select_stmt
                    .as_deref()
                    .and_then(node)
                    .is_some_and(|s| !matches!(s, N::SelectStmt(v) if plain_values(v))),
        ),
        N::UpdateStmt(u) => (
            u.relation.as_ref()?,
            !u.from_clause.is_empty() || u.returning_clause.is_some() || u.with_clause.is_some(),
        ),
        N::DeleteStmt(d) => (
            d.relation.as_ref()?,
            !d.using_clause.is_empty() || d.returning_clause.is_some() || d.with_clause.is_some(),
        ),
        _ => return None,
    };
    if extra || !rel.catalogname.is_empty() {
        return None;
    }
    let plain = match stmt {
        N::InsertStmt(i) => {
            i.cols.iter().all(|c| matches!(node(c), Some(N::ResTarget(r)) if r.val.is_none() && r.indirection.is_empty()))
                && match i.select_stmt.as_deref().and_then(node) {
                    Some(N::SelectStmt(v)) => v.values_lists.iter().all(|row| match node(row) {
                        Some(N::List(l)) => l.items.iter().all(constant),
                        _ => false,
                    }),
                    _ => false,
                }
        }
        N::UpdateStmt(u) => {
            u.target_list.iter().all(|t| matches!(node(t), Some(N::ResTarget(r)) if r.indirection.is_empty() && r.val.as_deref().is_some_and(constant)))
                && u.where_clause.as_deref().is_none_or(condition)
        }
        N::DeleteStmt(d) => d.where_clause.as_deref().is_none_or(condition),
        _ => false,
    };
    plain.then(|| table(rel))
}

/// `VALUES (...), ...` and nothing else: no WITH, ORDER BY, LIMIT, OFFSET or locking
/// clause (each can hold a query).
fn plain_values(v: &protobuf::SelectStmt) -> bool {
    !v.values_lists.is_empty()
        && v.target_list.is_empty()
        && v.from_clause.is_empty()
        && v.distinct_clause.is_empty()
        && v.into_clause.is_none()
        && v.where_clause.is_none()
        && v.group_clause.is_empty()
        && v.having_clause.is_none()
        && v.window_clause.is_empty()
        && v.sort_clause.is_empty()
        && v.limit_offset.is_none()
        && v.limit_count.is_none()
        && v.locking_clause.is_empty()
        && v.with_clause.is_none()
        && v.larg.is_none()
        && v.rarg.is_none()
        && v.op == protobuf::SetOperation::SetopNone as i32
}

/// A constant: a literal, NULL, or a cast of one (what Slony writes as a value).
fn constant(n: &protobuf::Node) -> bool {
    match node(n) {
        Some(N::AConst(_)) => true,
        Some(N::TypeCast(c)) => c.arg.as_deref().is_some_and(constant),
        _ => false,
    }
}

/// A condition Slony writes: `col = constant`, `col is null`, joined with AND.
fn condition(n: &protobuf::Node) -> bool {
    let column = |n: &protobuf::Node| matches!(node(n), Some(N::ColumnRef(c)) if c.fields.iter().all(|f| string(f).is_some()));
    match node(n) {
        Some(N::AExpr(e)) => {
            e.kind == protobuf::AExprKind::AexprOp as i32
                && matches!(e.name.as_slice(), [op] if string(op) == Some("="))
                && e.lexpr.as_deref().is_some_and(column)
                && e.rexpr.as_deref().is_some_and(constant)
        }
        Some(N::BoolExpr(b)) => {
            b.boolop == protobuf::BoolExprType::AndExpr as i32 && b.args.iter().all(condition)
        }
        Some(N::NullTest(t)) => t.arg.as_deref().is_some_and(column),
        _ => false,
    }
}

/// Calls every node kind in the tree (`{"FuncCall": {...}}` and so on) with its body,
/// and every object that has the fields of a RangeVar or a FuncCall under the pseudo
/// kinds `RangeVar` and `FuncCall` (the parse tree also holds them as typed fields).
fn walk<'v>(v: &'v Value, f: &mut impl FnMut(&'v str, &'v Value)) {
    match v {
        Value::Object(map) => {
            if map.contains_key("relname") && map.contains_key("schemaname") {
                f("RangeVar", v);
            }
            if map.contains_key("funcname") && map.contains_key("agg_star") {
                f("FuncCall", v);
            }
            for (k, child) in map {
                if k.starts_with(|c: char| c.is_ascii_uppercase()) {
                    f(k, child);
                }
                walk(child, f);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, f);
            }
        }
        _ => {}
    }
}

/// The last element of a `funcname` list, lower case.
fn func_name(body: &Value) -> String {
    body.get("funcname")
        .and_then(Value::as_array)
        .and_then(|names| names.last())
        .and_then(|n| n.pointer("/node/String/sval"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Functions no provider SQL may call, by name or prefix: they read or write server
/// files, run SQL given as text, change settings (`set_config` is `SET ROLE` in
/// disguise), signal other backends or the postmaster, or manage replication.
const DENIED_PREFIXES: &[&str] = &[
    "set_config",
    "pg_read_",
    "pg_ls_",
    "pg_stat_file",
    "pg_file_",
    "pg_logdir_",
    "pg_current_logfile",
    "lo_",
    "dblink",
    "query_to_xml",
    "cursor_to_xml",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "ts_stat",
    "ts_rewrite",
    // contrib: tablefunc and xml2 run SQL given as text.
    "crosstab",
    "connectby",
    "xpath_table",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_show_all_file_settings",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_",
    "pg_drop_replication_slot",
    "pg_copy_",
    "pg_replication_",
    "pg_logical_",
    "pg_wal_",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_sleep",
    "pg_log_backend",
    "pg_import_system_collations",
    "pg_stat_reset",
    "pg_export_snapshot",
    "pg_advisory",
    "pg_try_advisory",
];

fn is_denied(name: &str) -> bool {
    DENIED_PREFIXES.iter().any(|p| name.starts_with(p))
}

const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_toast"];

/// Settings provider SQL may change: what Slony's own scripts set.
const ALLOWED_SETTINGS: &[&str] = &["search_path", "session_replication_role"];

/// The rules provider SQL is held to, for one cluster.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `_<cluster>`, as the parser reads the schema name.
    schema: String,
    /// What the operator allows beyond the defaults.
    allow: Allowances,
}

impl Rules {
    /// The rules for the cluster whose schema is `schema` (`_<cluster>`, unquoted).
    pub fn new(schema: &str, allow: Allowances) -> Self {
        Rules {
            schema: schema.to_string(),
            allow,
        }
    }

    /// The cluster's schema name (`_<cluster>`).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Whether `table` is a table provider SQL may change rows of (not in the system
    /// catalogs, not the cluster's own tables).
    pub fn check_table(&self, table: &Table) -> Result<(), Refusal> {
        if table.schema == self.schema {
            return Err(Refusal::ClusterSchema);
        }
        if SYSTEM_SCHEMAS.contains(&table.schema.as_str())
            || (table.schema.is_empty() && table.name.starts_with("pg_"))
        {
            return Err(Refusal::Catalog(table.to_string()));
        }
        Ok(())
    }

    /// [`Rules::check_table`], for a table Slony names itself: always schema-qualified,
    /// so that no `search_path` decides where its rows go.
    pub fn check_target(&self, table: &Table) -> Result<(), Refusal> {
        if table.schema.is_empty() {
            return Err(Refusal::RowChange(
                "the table is not schema-qualified, as Slony always writes it",
            ));
        }
        self.check_table(table)
    }

    /// Whether a schema name is one provider SQL may set values in (sequences): not the
    /// cluster's, not a system schema.
    pub fn check_schema(&self, schema: &str) -> Result<(), Refusal> {
        if schema == self.schema {
            Err(Refusal::ClusterSchema)
        } else if SYSTEM_SCHEMAS.contains(&schema) {
            Err(Refusal::Catalog(schema.to_string()))
        } else {
            Ok(())
        }
    }

    /// Checks DDL (an EXECUTE SCRIPT statement, a bootstrap statement) against the rules;
    /// every statement the text holds is checked. Returns the allowances it used.
    pub fn check_ddl(&self, parsed: &Parsed) -> Result<Vec<Allowance>, Refusal> {
        // The check walks a generic copy of the tree, some kilobytes a node: DDL is short.
        if parsed.text_len > MAX_DDL {
            return Err(Refusal::Grammar(format!(
                "a DDL statement longer than {} KiB is not checked, so not applied",
                MAX_DDL / 1024
            )));
        }
        let mut used = Vec::new();
        let json = serde_json::to_value(&parsed.tree)
            .map_err(|e| Refusal::NotSql(format!("internal: the parse tree: {e}")))?;
        self.check_names(&json)?;
        let mut refusal = None;
        walk(&json, &mut |kind, body| {
            if refusal.is_some() {
                return;
            }
            match self.judge(kind, body) {
                Ok(Some(a)) => used.push(a),
                Ok(None) => {}
                Err(r) => refusal = Some(r),
            }
        });
        match refusal {
            Some(r) => Err(r),
            None => Ok(used),
        }
    }

    /// Every name in the tree, wherever it hides (a `SET search_path` value, a new
    /// schema, a schema of its own): the cluster's schema is out of reach, and so are
    /// the system schemas as a place to put or look for things.
    fn check_names(&self, tree: &Value) -> Result<(), Refusal> {
        fn strings<'v>(v: &'v Value, key: &str, f: &mut impl FnMut(&str, &'v str)) {
            match v {
                Value::String(s) => f(key, s),
                Value::Array(items) => items.iter().for_each(|i| strings(i, key, f)),
                Value::Object(map) => map.iter().for_each(|(k, c)| strings(c, k, f)),
                _ => {}
            }
        }
        let mut found = Ok(());
        strings(tree, "", &mut |key, value| {
            if found.is_err() {
                return;
            }
            if value == self.schema {
                found = Err(Refusal::ClusterSchema);
            } else if matches!(key, "schemaname" | "newschema") && SYSTEM_SCHEMAS.contains(&value) {
                found = Err(Refusal::Catalog(value.to_string()));
            }
        });
        found?;
        // search_path may name only ordinary schemas.
        let mut bad = None;
        walk(tree, &mut |kind, body| {
            if kind == "VariableSetStmt"
                && body.get("name").and_then(Value::as_str) == Some("search_path")
            {
                strings(body, "", &mut |key, v| {
                    if key == "sval" && (SYSTEM_SCHEMAS.contains(&v) || v == self.schema) {
                        bad = Some(v.to_string());
                    }
                });
            }
        });
        match bad {
            Some(v) if v == self.schema => Err(Refusal::ClusterSchema),
            Some(v) => Err(Refusal::Catalog(format!("search_path {v}"))),
            None => Ok(()),
        }
    }

    /// The kind of object a DROP, RENAME, SET SCHEMA or COMMENT names must be one of
    /// replicated-table DDL: tables and what belongs to them, types, ordinary schemas.
    /// Functions and their kin need the functions allowance; roles, databases,
    /// tablespaces, extensions, languages, servers and the like are never touched.
    fn object_kind(&self, kind: &str, body: &Value) -> Result<(), Refusal> {
        use protobuf::ObjectType as O;
        let field = match kind {
            "DropStmt" => "remove_type",
            "RenameStmt" => "rename_type",
            "AlterObjectSchemaStmt" => "object_type",
            _ => "objtype",
        };
        let n = body.get(field).and_then(Value::as_i64).unwrap_or(0);
        let table_ddl = [
            O::ObjectTable,
            O::ObjectSequence,
            O::ObjectView,
            O::ObjectMatview,
            O::ObjectIndex,
            O::ObjectColumn,
            O::ObjectAttribute,
            O::ObjectTabconstraint,
            O::ObjectDomconstraint,
            O::ObjectType,
            O::ObjectDomain,
            O::ObjectSchema,
            O::ObjectPolicy,
            O::ObjectRule,
            O::ObjectStatisticExt,
            O::ObjectTrigger,
            O::ObjectCollation,
            O::ObjectDefault,
        ];
        let function_like = [
            O::ObjectFunction,
            O::ObjectProcedure,
            O::ObjectRoutine,
            O::ObjectAggregate,
            O::ObjectOperator,
            O::ObjectOpclass,
            O::ObjectOpfamily,
            O::ObjectCast,
            O::ObjectConversion,
            O::ObjectTransform,
        ];
        if table_ddl.iter().any(|o| *o as i64 == n) {
            Ok(())
        } else if function_like.iter().any(|o| *o as i64 == n) {
            if self.allow.functions {
                Ok(())
            } else {
                Err(Refusal::FunctionDefinition)
            }
        } else if n == O::ObjectRole as i64 {
            Err(Refusal::RoleOrPrivilege("a role"))
        } else {
            Err(Refusal::Administration(
                "a statement on a database, tablespace, extension, language, server or other object outside replicated tables",
            ))
        }
    }

    /// One node of a DDL tree.
    fn judge(&self, kind: &str, body: &Value) -> Verdict {
        judge_session(kind, body)
            .or_else(|| judge_privileges(kind))
            .or_else(|| self.judge_code(kind))
            .or_else(|| judge_administration(kind, body))
            .unwrap_or_else(|| self.judge_names(kind, body))
    }

    /// Statements that define code or make a function run later; they need the
    /// operator's allowance. `None` for any other kind.
    fn judge_code(&self, kind: &str) -> Option<Verdict> {
        Some(match kind {
            "DoStmt" if self.allow.do_blocks => Ok(Some(Allowance::DoBlock)),
            "DoStmt" => Err(Refusal::DoBlock),
            "CreateFunctionStmt" | "AlterFunctionStmt" | "CreateTransformStmt"
                if self.allow.functions =>
            {
                Ok(Some(Allowance::Function))
            }
            "CreateFunctionStmt" | "AlterFunctionStmt" | "CreateTransformStmt" => {
                Err(Refusal::FunctionDefinition)
            }
            // Statements that make a function run later (operators, aggregates, casts,
            // operator classes, conversions, triggers) are function definitions too.
            "DefineStmt"
            | "CreateCastStmt"
            | "CreateOpClassStmt"
            | "CreateOpFamilyStmt"
            | "AlterOpFamilyStmt"
            | "CreateConversionStmt"
            | "CreateTrigStmt"
            | "AlterOperatorStmt"
            | "AlterTypeStmt"
            | "CreateRangeStmt"
                if self.allow.functions =>
            {
                Ok(Some(Allowance::Function))
            }
            "DefineStmt"
            | "CreateCastStmt"
            | "CreateOpClassStmt"
            | "CreateOpFamilyStmt"
            | "AlterOpFamilyStmt"
            | "CreateConversionStmt"
            | "CreateTrigStmt"
            | "AlterOperatorStmt"
            | "AlterTypeStmt"
            | "CreateRangeStmt" => Err(Refusal::FunctionDefinition),
            "CreatePlangStmt" if self.allow.languages => Ok(Some(Allowance::Language)),
            "CreatePlangStmt" => Err(Refusal::LanguageDefinition),
            _ => return None,
        })
    }

    /// The names a node uses (functions called, tables, schemas, the objects of a DROP
    /// or RENAME), and the allowlist of statement kinds for any kind not judged before.
    fn judge_names(&self, kind: &str, body: &Value) -> Verdict {
        let role = |what| Err(Refusal::RoleOrPrivilege(what));
        match kind {
            "FuncCall" => {
                let name = func_name(body);
                if is_denied(&name) {
                    Err(Refusal::DeniedFunction(name))
                } else {
                    Ok(None)
                }
            }
            "RangeVar" => self
                .check_table(&Table {
                    schema: text(body, "schemaname").to_string(),
                    name: text(body, "relname").to_string(),
                })
                .map(|()| None),
            "String" if text(body, "sval") == self.schema => Err(Refusal::ClusterSchema),
            "CreateSchemaStmt" if body.get("authrole").is_some_and(|r| !r.is_null()) => {
                role("CREATE SCHEMA ... AUTHORIZATION")
            }
            "AlterTableCmd" if body.get("newowner").is_some_and(|r| !r.is_null()) => {
                role("ALTER TABLE ... OWNER TO")
            }
            "DropStmt" | "RenameStmt" | "AlterObjectSchemaStmt" | "CommentStmt" => {
                // Objects named by lists of strings: `pg_catalog.x` is a catalog object.
                let mut names = Vec::new();
                walk(body, &mut |k, b| {
                    if k == "String" {
                        names.push(b.get("sval").and_then(Value::as_str).unwrap_or(""));
                    }
                });
                if let Some(n) = names.iter().find(|n| SYSTEM_SCHEMAS.contains(n)) {
                    return Err(Refusal::Catalog((*n).to_string()));
                }
                self.object_kind(kind, body).map(|()| None)
            }
            // Any other statement kind must be one an EXECUTE SCRIPT of replicated
            // tables needs: an allowlist, so a kind nobody thought of is refused.
            k if k.ends_with("Stmt") && !DDL_STATEMENTS.contains(&k) => {
                Err(Refusal::Administration(DDL_STATEMENTS_RULE))
            }
            _ => Ok(None),
        }
    }
}

/// What the DDL rules say of one node of a tree: refused, or accepted with the
/// allowance it used, if any.
type Verdict = Result<Option<Allowance>, Refusal>;

/// The string at `key` of a node's body; empty when there is none.
fn text<'v>(body: &'v Value, key: &str) -> &'v str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Transaction control, session settings, COPY and `ALTER SYSTEM`. `None` for any
/// other kind.
fn judge_session(kind: &str, body: &Value) -> Option<Verdict> {
    Some(match kind {
        "TransactionStmt" => Err(Refusal::TransactionControl),
        "VariableSetStmt" => judge_setting(body),
        "DiscardStmt" => Err(Refusal::SessionChange("DISCARD".into())),
        "CopyStmt" => {
            let program = body.get("is_program").and_then(Value::as_bool) == Some(true);
            if program || !text(body, "filename").is_empty() {
                Err(Refusal::CopyFileOrProgram)
            } else {
                Err(Refusal::Copy)
            }
        }
        "AlterSystemStmt" => Err(Refusal::AlterSystem),
        _ => return None,
    })
}

/// A `SET` or `RESET`: only the settings Slony's own scripts set, and
/// `session_replication_role` only as Slony sets it.
fn judge_setting(body: &Value) -> Verdict {
    let name = text(body, "name");
    // serde writes prost enums as their numbers.
    let set_value = body.get("kind").and_then(Value::as_i64)
        == Some(protobuf::VariableSetKind::VarSetValue as i64);
    // What Slony sets around DDL (`local`, then `replica`): `origin` or the
    // default would let a user trigger or the guard run on replicated rows.
    let slony_role = body.get("args").and_then(Value::as_array).is_some_and(|a| {
        a.len() == 1
            && matches!(
                a[0].pointer("/node/AConst/val/Sval/sval")
                    .and_then(Value::as_str),
                Some("replica" | "local")
            )
    });
    if set_value && name == "session_replication_role" && !slony_role {
        Err(Refusal::SessionChange(
            "session_replication_role to anything but replica or local".into(),
        ))
    } else if set_value && ALLOWED_SETTINGS.contains(&name) {
        Ok(None)
    } else if name.is_empty() {
        Err(Refusal::SessionChange("RESET ALL".into()))
    } else {
        Err(Refusal::SessionChange(format!("SET or RESET of {name}")))
    }
}

/// Role, privilege and ownership statements (never allowed), and row-level security
/// policies (allowed). `None` for any other kind.
fn judge_privileges(kind: &str) -> Option<Verdict> {
    let role = |what| Err(Refusal::RoleOrPrivilege(what));
    Some(match kind {
        "CreateRoleStmt" | "AlterRoleStmt" | "AlterRoleSetStmt" | "DropRoleStmt" => {
            role("a role statement")
        }
        "GrantStmt" | "GrantRoleStmt" | "AlterDefaultPrivilegesStmt" => role("GRANT or REVOKE"),
        "ReassignOwnedStmt" | "DropOwnedStmt" | "AlterOwnerStmt" => role("a change of owner"),
        "CreateUserMappingStmt" | "AlterUserMappingStmt" | "DropUserMappingStmt" => {
            role("a user mapping")
        }
        "SecLabelStmt" => role("SECURITY LABEL"),
        "CreatePolicyStmt" | "AlterPolicyStmt" => Ok(None),
        _ => return None,
    })
}

/// Server administration: extensions, foreign data, tablespaces, databases,
/// replication, VACUUM, prepared statements, cursors and the like. `None` for any other
/// kind.
fn judge_administration(kind: &str, body: &Value) -> Option<Verdict> {
    let admin = |what| Err(Refusal::Administration(what));
    Some(match kind {
        "LoadStmt" => admin("LOAD"),
        "CreateExtensionStmt" | "AlterExtensionStmt" | "AlterExtensionContentsStmt" => {
            admin("an extension statement")
        }
        "CreateFdwStmt"
        | "AlterFdwStmt"
        | "CreateForeignServerStmt"
        | "AlterForeignServerStmt"
        | "ImportForeignSchemaStmt" => admin("a foreign-data statement"),
        "CreateEventTrigStmt" | "AlterEventTrigStmt" => admin("an event trigger"),
        "CreateAmStmt" => admin("CREATE ACCESS METHOD"),
        "CreateTableSpaceStmt"
        | "DropTableSpaceStmt"
        | "AlterTableSpaceOptionsStmt"
        | "AlterTableMoveAllStmt" => admin("a tablespace statement"),
        "CreatedbStmt"
        | "DropdbStmt"
        | "AlterDatabaseStmt"
        | "AlterDatabaseSetStmt"
        | "AlterDatabaseRefreshCollStmt" => admin("a database statement"),
        "CreateSubscriptionStmt"
        | "AlterSubscriptionStmt"
        | "DropSubscriptionStmt"
        | "CreatePublicationStmt"
        | "AlterPublicationStmt" => admin("a publication or subscription"),
        "CheckPointStmt" => admin("CHECKPOINT"),
        "VacuumStmt" if body.get("is_vacuumcmd").and_then(Value::as_bool) == Some(true) => {
            admin("VACUUM")
        }
        "PrepareStmt" | "ExecuteStmt" | "DeallocateStmt" => admin("a prepared statement"),
        "DeclareCursorStmt" | "FetchStmt" | "ClosePortalStmt" => admin("a cursor"),
        "ListenStmt" | "UnlistenStmt" => admin("LISTEN"),
        "CreateForeignTableStmt" => admin("a foreign table"),
        _ => return None,
    })
}

/// The statement kinds DDL may hold (beyond those judged one by one above).
const DDL_STATEMENTS: &[&str] = &[
    "RawStmt",
    "SelectStmt",
    "CallStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
    "TruncateStmt",
    "CreateStmt",
    "AlterTableStmt",
    "DropStmt",
    "IndexStmt",
    "ReindexStmt",
    "ClusterStmt",
    "CreateSeqStmt",
    "AlterSeqStmt",
    "RenameStmt",
    "CommentStmt",
    "ViewStmt",
    "CreateTableAsStmt",
    "RefreshMatViewStmt",
    "CreateSchemaStmt",
    "AlterObjectSchemaStmt",
    "CreateEnumStmt",
    "AlterEnumStmt",
    "CompositeTypeStmt",
    "CreateDomainStmt",
    "AlterDomainStmt",
    "CreateStatsStmt",
    "AlterStatsStmt",
    "CreatePolicyStmt",
    "AlterPolicyStmt",
    "RuleStmt",
    "LockStmt",
    "VacuumStmt",
    "VariableSetStmt",
    "VariableShowStmt",
    "NotifyStmt",
    "ExplainStmt",
    "ConstraintsSetStmt",
    "SetOperationStmt",
    "ReplicaIdentityStmt",
    "AlterCollationStmt",
];

/// Why a statement kind outside [`DDL_STATEMENTS`] is refused.
const DDL_STATEMENTS_RULE: &str =
    "a statement of a kind an EXECUTE SCRIPT of replicated tables does not hold";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_tables_are_read_from_the_tree() {
        let d = |sql: &str| parse(sql, Strings::Standard).unwrap().dropped_tables();
        assert_eq!(
            d("DROP TABLE IF EXISTS \"s1\".\"T 1\";"),
            Some(vec![("s1".to_string(), "T 1".to_string())])
        );
        assert_eq!(
            d("drop table s1.a, s2.b"),
            Some(vec![("s1".into(), "a".into()), ("s2".into(), "b".into())])
        );
        for other in [
            "DROP TABLE t",
            "DROP TABLE s1.t CASCADE",
            "DROP VIEW s1.v",
            "DROP TABLE s1.t; DROP TABLE s1.u",
            "SELECT 1",
        ] {
            assert_eq!(d(other), None, "{other}");
        }
    }

    fn rules() -> Rules {
        Rules::new("_lab", Allowances::default())
    }

    fn stmt(sql: &str) -> Statement {
        parse(sql, Strings::Standard).unwrap().statement().unwrap()
    }

    fn ddl(sql: &str) -> Result<Vec<Allowance>, Refusal> {
        let p = parse(sql, Strings::Standard)?;
        rules().check_ddl(&p)
    }

    #[test]
    fn slony_shapes() {
        assert_eq!(
            stmt("set session_replication_role to replica"),
            Statement::ReplicaRole
        );
        assert_eq!(stmt("start transaction"), Statement::Begin);
        assert_eq!(stmt("BEGIN"), Statement::Begin);
        assert_eq!(stmt("commit"), Statement::Commit);
        assert_eq!(stmt("END"), Statement::Commit);
        assert_eq!(
            stmt("select \"_lab\".archiveTracking_offline('6', '2026-11-21 21:58:48+00')"),
            Statement::Call {
                schema: "_lab".into(),
                function: "archivetracking_offline".into(),
                args: vec![
                    Literal::Text("6".into()),
                    Literal::Text("2026-11-21 21:58:48+00".into())
                ]
            }
        );
        assert_eq!(
            stmt("select \"_lab\".sequenceSetValue_offline(1,'101')"),
            Statement::Call {
                schema: "_lab".into(),
                function: "sequencesetvalue_offline".into(),
                args: vec![Literal::Integer(1), Literal::Text("101".into())]
            }
        );
        let copy = "COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN";
        match stmt(copy) {
            Statement::CopyIn { table, columns } => {
                assert_eq!(table.schema, "_lab");
                assert_eq!(table.name, "sl_log_archive");
                assert_eq!(columns.len(), 9);
                assert_eq!(columns[6], "log_cmdtype");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            stmt("vacuum analyze \"_lab\".sl_archive_tracking"),
            Statement::VacuumAnalyze(t) if t.name == "sl_archive_tracking"
        ));
        assert!(matches!(
            stmt("analyze \"s1\".\"t1\""),
            Statement::Analyze(_)
        ));
        assert!(matches!(
            stmt("delete from \"s1\".\"t1\""),
            Statement::DeleteAll(_)
        ));
        for dml in [
            "insert into \"s1\".\"t1\" (id,txt) values ('1','a'), ('2', NULL)",
            "update only \"s1\".\"t1\" set txt='x' where id='1' and k is null",
            "delete from only \"s1\".\"t1\" where id='2'",
        ] {
            assert!(matches!(stmt(dml), Statement::RowChange(_)), "{dml}");
        }
    }

    #[test]
    fn richer_statements_are_not_slony_shapes() {
        for sql in [
            "insert into s1.t1 values (pg_read_file('/etc/passwd'))",
            "insert into s1.t1 select * from s1.t2",
            "insert into s1.t1 values ((select 1))",
            "update s1.t1 set a = lo_export(1, '/tmp/x') where id = '1'",
            "select \"_lab\".archiveTracking_offline('6', now()::text)",
            "select \"_lab\".archiveTracking_offline('6', '1') from pg_authid",
            "select 1, \"_lab\".f('1')",
            "copy s1.t1 from stdin with (format csv)",
            "set session_replication_role to origin",
            "set local session_replication_role to replica",
            "begin isolation level serializable",
            "commit and chain",
        ] {
            assert_eq!(stmt(sql), Statement::Other, "{sql}");
        }
    }

    #[test]
    fn comments_do_not_hide_transaction_control() {
        for sql in [
            "/**/commit",
            "commit/**/",
            "END/**/",
            "commit--x\n",
            "/* a /* nested */ comment */ COMMIT",
            "CoMmIt",
            "rollback",
            "savepoint a",
            "release a",
            "prepare transaction 'x'",
            "abort",
        ] {
            let p = parse(sql, Strings::Standard).unwrap();
            assert_eq!(ddl(sql), Err(Refusal::TransactionControl), "{sql}");
            assert_eq!(p.len(), 1);
        }
    }

    #[test]
    fn several_statements_are_seen() {
        let p = parse("select 1; /* ; */ commit", Strings::Standard).unwrap();
        assert_eq!(p.statement(), Err(Refusal::SeveralStatements(2)));
        assert_eq!(
            ddl("create table s1.x (a int); commit"),
            Err(Refusal::TransactionControl)
        );
    }

    #[test]
    fn strings_are_read_as_the_server_reads_them() {
        // With standard strings, '\' ends the string and `commit` is a statement.
        let sql = "insert into s1.t values ('a\\'); commit; select ('x')";
        assert_eq!(
            parse(sql, Strings::Standard).unwrap().statement(),
            Err(Refusal::SeveralStatements(3))
        );
        // With escaped strings the rest is one string, and what follows it is no SQL.
        assert!(matches!(
            parse(sql, Strings::Escaped),
            Err(Refusal::NotSql(_))
        ));
        let one = "insert into s1.t values ('a\\'; commit; drop table s1.t; --')";
        assert!(matches!(
            parse(one, Strings::Escaped).unwrap().statement(),
            Ok(Statement::RowChange(_))
        ));
        // Read with standard strings, the same text is no valid SQL at all.
        assert!(matches!(
            parse(one, Strings::Standard),
            Err(Refusal::NotSql(_))
        ));
        // E'' strings escape either way; U&'' strings never do.
        assert!(matches!(
            parse(
                "insert into s1.t values (E'a\\'; commit; --')",
                Strings::Standard
            )
            .unwrap()
            .statement(),
            Ok(Statement::RowChange(_))
        ));
        assert_eq!(
            parse("select U&'d\\0061t' ; commit", Strings::Standard)
                .unwrap()
                .statement(),
            Err(Refusal::SeveralStatements(2))
        );
    }

    #[test]
    fn copy_to_files_and_programs_is_refused() {
        for sql in [
            "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'",
            "copy s1.t1 to program 'id' -- from stdin",
            "copy s1.t1 from '/etc/passwd' /* from stdin */",
            "copy s1.t1 to '/tmp/out'",
            "COPY s1.t1 FROM PROGRAM $$id$$",
            "CoPy s1.t1 fRoM pRoGrAm E'id'",
        ] {
            assert_eq!(ddl(sql), Err(Refusal::CopyFileOrProgram), "{sql}");
            assert_eq!(stmt(sql), Statement::Other, "{sql}");
        }
        assert_eq!(ddl("copy s1.t1 from stdin"), Err(Refusal::Copy));
    }

    #[test]
    fn role_session_and_privilege_changes_are_refused() {
        for sql in [
            "ALTER ROLE app SUPERUSER",
            "alter user app with superuser",
            "create role x superuser",
            "drop role x",
            "grant all on s1.t1 to public",
            "revoke select on s1.t1 from app",
            "grant pg_execute_server_program to app",
            "alter default privileges grant all on tables to public",
            "alter table s1.t1 owner to postgres",
            "alter schema s1 owner to postgres",
            "reassign owned by app to postgres",
            "create schema x authorization postgres",
        ] {
            assert!(
                matches!(ddl(sql), Err(Refusal::RoleOrPrivilege(_))),
                "{sql}: {:?}",
                ddl(sql)
            );
        }
        for sql in [
            "set role postgres",
            "SET/**/ROLE postgres",
            "set session authorization postgres",
            "set local role postgres",
            "reset role",
            "reset all",
            "set standard_conforming_strings to off",
            "set session_replication_role to default",
            "discard all",
            "set transaction isolation level serializable",
        ] {
            assert!(
                matches!(ddl(sql), Err(Refusal::SessionChange(_))),
                "{sql}: {:?}",
                ddl(sql)
            );
        }
        assert_eq!(
            ddl("alter system set fsync = off"),
            Err(Refusal::AlterSystem)
        );
        assert_eq!(ddl("set search_path to s1, public"), Ok(vec![]));
        assert_eq!(ddl("set session_replication_role to replica"), Ok(vec![]));
        assert_eq!(ddl("set session_replication_role to local"), Ok(vec![]));
        for other in ["origin", "default", "'origin'"] {
            let sql = format!("set session_replication_role = {other}");
            assert!(matches!(ddl(&sql), Err(Refusal::SessionChange(_))), "{sql}");
        }
        assert_eq!(
            ddl("select set_config('role', 'postgres', false)"),
            Err(Refusal::DeniedFunction("set_config".into()))
        );
    }

    #[test]
    fn dangerous_functions_are_refused_wherever_they_hide() {
        for sql in [
            "select pg_read_file('/etc/passwd')",
            "select pg_catalog.pg_read_binary_file('/etc/passwd')",
            "alter table s1.t1 add column x text default pg_read_file('/etc/hostname')",
            "create index on s1.t1 ((lo_export(1, '/tmp/x')))",
            "create view s1.v as select query_to_xml('drop table s1.t1', true, true, '')",
            "call pg_catalog.pg_sleep(1000)",
            "select * from dblink('host=x', 'select 1') as t(a int)",
            "select \"pg_terminate_backend\"(1)",
        ] {
            assert!(
                matches!(ddl(sql), Err(Refusal::DeniedFunction(_))),
                "{sql}: {:?}",
                ddl(sql)
            );
        }
    }

    #[test]
    fn catalogs_and_the_cluster_schema_are_out_of_reach() {
        for sql in [
            "update pg_catalog.pg_authid set rolsuper = true",
            "update pg_authid set rolsuper = true",
            "drop function pg_catalog.now()",
            "delete from information_schema.sql_features",
        ] {
            assert!(
                matches!(ddl(sql), Err(Refusal::Catalog(_))),
                "{sql}: {:?}",
                ddl(sql)
            );
        }
        for sql in [
            "update \"_lab\".sl_archive_tracking set at_counter = 99",
            "drop schema \"_lab\" cascade",
            "alter table _lab.sl_log_archive disable trigger all",
        ] {
            assert_eq!(ddl(sql), Err(Refusal::ClusterSchema), "{sql}");
        }
    }

    #[test]
    fn functions_and_do_need_an_allowance() {
        let f = "create function s1.f() returns int language sql as $x$ select 1 $x$";
        assert_eq!(ddl(f), Err(Refusal::FunctionDefinition));
        assert_eq!(ddl("do $$ begin perform 1; end $$"), Err(Refusal::DoBlock));
        assert_eq!(
            ddl("create language plsample handler s1.plsample_call_handler"),
            Err(Refusal::LanguageDefinition)
        );
        // The short form is CREATE EXTENSION in disguise.
        assert!(matches!(
            ddl("create language plperlu"),
            Err(Refusal::Administration(_))
        ));
        let all = Rules::new(
            "_lab",
            Allowances {
                do_blocks: true,
                functions: true,
                languages: true,
            },
        );
        let p = parse(f, Strings::Standard).unwrap();
        assert_eq!(all.check_ddl(&p), Ok(vec![Allowance::Function]));
        let p = parse(
            "do $odd_Tag1$ begin perform 1; end $odd_Tag1$",
            Strings::Standard,
        )
        .unwrap();
        assert_eq!(all.check_ddl(&p), Ok(vec![Allowance::DoBlock]));
    }

    #[test]
    fn functions_reached_without_a_call_need_the_functions_allowance() {
        for sql in [
            "create aggregate s1.cfg(text, boolean) (sfunc = set_config, stype = text, initcond = 'standard_conforming_strings')",
            "create operator s1.!!! (rightarg = text, function = pg_read_file)",
            "create cast (text as s1.d) with function pg_read_file(text)",
            "create trigger tr before insert on s1.t2 for each row execute function lo_manage(x)",
            "create trigger tr before insert on s1.t2 for each row execute function s1.f()",
        ] {
            assert_eq!(ddl(sql), Err(Refusal::FunctionDefinition), "{sql}");
        }
        assert!(matches!(
            ddl("create foreign table s1.f (a text) server files options (program 'id')"),
            Err(Refusal::Administration(_))
        ));
        assert_eq!(
            ddl("select ts_rewrite('a'::tsquery, $q$select 'a'::tsquery, 'b'::tsquery$q$)"),
            Err(Refusal::DeniedFunction("ts_rewrite".into()))
        );
        assert!(matches!(ddl("checkpoint"), Err(Refusal::Administration(_))));
    }

    #[test]
    fn what_the_second_review_found_is_refused() {
        for sql in [
            "insert into s1.t2 (k) values ('a') limit (select lo_export(4243, '/tmp/x'))",
            "insert into s1.t2 (k) with x as (select pg_catalog.set_config('session_replication_role','origin',false) s) values ('b') offset (select count(*)-1 from x)",
            "insert into s1.t2 (k) values ('c') order by (select pg_read_file('/etc/hostname'))",
            "insert into s1.t2 (k) values ('z') offset (select count(*)-1 from generate_series(36,1000) g, lateral (select \"_lab\".archivetracking_offline(g, now()::timestamp)) x)",
        ] {
            assert_eq!(stmt(sql), Statement::Other, "{sql}");
            assert!(ddl(sql).is_err(), "{sql}: {:?}", ddl(sql));
        }
        for sql in [
            "drop extension plpgsql cascade",
            "drop language plpgsql cascade",
            "alter database postgres rename to p2",
            "drop server s cascade",
            "drop event trigger e",
            "drop publication p",
            "alter tablespace t rename to t2",
        ] {
            assert!(
                matches!(ddl(sql), Err(Refusal::Administration(_))),
                "{sql}: {:?}",
                ddl(sql)
            );
        }
        assert!(matches!(
            ddl("alter role app rename to app2"),
            Err(Refusal::RoleOrPrivilege(_))
        ));
        for sql in [
            "alter function public.f() rename to g",
            "drop function s1.f()",
            "create type s1.r as range (subtype = float8, subtype_diff = float8mi)",
        ] {
            assert_eq!(ddl(sql), Err(Refusal::FunctionDefinition), "{sql}");
        }
        for sql in [
            "select * from crosstab($q$select 1$q$) as t(a text, b text)",
            "select * from connectby('t', 'a', 'b', '1', 0) as t(a text)",
        ] {
            assert!(matches!(ddl(sql), Err(Refusal::DeniedFunction(_))), "{sql}");
        }
        for sql in [
            "drop table s1.old cascade",
            "alter table s1.t rename to t2",
            "alter table s1.t rename column a to b",
            "alter index s1.i rename to j",
            "drop schema s9 cascade",
            "comment on column s1.t.a is 'x'",
            "alter table s1.t set schema s2",
        ] {
            assert_eq!(ddl(sql), Ok(vec![]), "{sql}");
        }
    }

    #[test]
    fn names_are_checked_wherever_they_hide() {
        for sql in [
            "set search_path = _lab",
            "set search_path to s1, \"_lab\"",
            "alter schema _lab rename to lab_old",
            "create schema _lab",
            "alter table s1.t2 set schema _lab",
            "comment on schema _lab is 'x'",
        ] {
            assert_eq!(ddl(sql), Err(Refusal::ClusterSchema), "{sql}");
        }
        for sql in [
            "set search_path = information_schema",
            "set search_path = s1, pg_catalog",
            "alter table s1.t2 set schema pg_catalog",
            "create schema pg_toast",
        ] {
            assert!(
                matches!(ddl(sql), Err(Refusal::Catalog(_))),
                "{sql}: {:?}",
                ddl(sql)
            );
        }
        let long = format!("select {}", vec!["1"; MAX_DDL / 2 + 1].join(","));
        assert!(matches!(ddl(&long), Err(Refusal::Grammar(_))));
        // A row change of constants is checked without the generic walk, whatever its size.
        let big = format!(
            "insert into s1.t (a) values ('{}')",
            "x".repeat(2 * MAX_DDL)
        );
        assert!(matches!(stmt(&big), Statement::RowChange(_)));
    }

    #[test]
    fn ordinary_ddl_passes() {
        for sql in [
            "alter table s1.t2 add column extra text default 'x'",
            "alter table table4 add column x int",
            "create table \"Schema.name\".\"Capital Idea\" (id serial primary key, t text default now()::text)",
            "create index t2_k on s1.t2 (k)",
            "drop table if exists s1.old",
            "create sequence if not exists s1.q start 5",
            "select pg_catalog.setval('\"s1\".\"q\"', 5, true)",
            "alter sequence s1.q owned by s1.t2.k",
            "update s1.t2 set v = v + 1 where k = 'x'",
            "comment on table s1.t2 is 'x'",
            "\n",
        ] {
            assert_eq!(ddl(sql), Ok(vec![]), "{sql}");
        }
    }
}
