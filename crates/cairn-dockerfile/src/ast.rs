//! The parsed Dockerfile before expansion: instructions with spans, flags, arguments and heredocs.
//! This is what `cairn dockerfile parse --json` prints; [`crate::plan`] turns it into stages.

use crate::{Command, Span, Warning};
use serde::Serialize;

/// A parsed Dockerfile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dockerfile {
    /// The name used in error messages (the path as the user gave it).
    pub name: String,
    /// Parser directives from the top of the file.
    pub directives: Directives,
    /// Every instruction, in file order (ARGs before the first FROM included).
    pub instructions: Vec<Instruction>,
    /// Findings that do not stop the build (unknown `# syntax=` frontend, empty continuation lines).
    pub warnings: Vec<Warning>,
    /// The source lines (no line endings), to quote in errors.
    #[serde(skip)]
    pub(crate) lines: Vec<String>,
}

/// `# syntax=`, `# escape=`, `# check=`.
#[derive(Debug, Clone, Serialize)]
pub struct Directives {
    /// `# syntax=` value, if any.
    pub syntax: Option<String>,
    /// The escape character: `\\` or `` ` ``.
    pub escape: char,
    /// `# check=` value, if any.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// The instruction keywords of the Dockerfile reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Keyword {
    /// FROM.
    From,
    /// RUN.
    Run,
    /// CMD.
    Cmd,
    /// LABEL.
    Label,
    /// MAINTAINER.
    Maintainer,
    /// EXPOSE.
    Expose,
    /// ENV.
    Env,
    /// ADD.
    Add,
    /// COPY.
    Copy,
    /// ENTRYPOINT.
    Entrypoint,
    /// VOLUME.
    Volume,
    /// USER.
    User,
    /// WORKDIR.
    Workdir,
    /// ARG.
    Arg,
    /// ONBUILD.
    Onbuild,
    /// STOPSIGNAL.
    Stopsignal,
    /// HEALTHCHECK.
    Healthcheck,
    /// SHELL.
    Shell,
}

impl Keyword {
    /// Every keyword, for lookups and suggestions.
    pub const ALL: [Keyword; 18] = [
        Keyword::From,
        Keyword::Run,
        Keyword::Cmd,
        Keyword::Label,
        Keyword::Maintainer,
        Keyword::Expose,
        Keyword::Env,
        Keyword::Add,
        Keyword::Copy,
        Keyword::Entrypoint,
        Keyword::Volume,
        Keyword::User,
        Keyword::Workdir,
        Keyword::Arg,
        Keyword::Onbuild,
        Keyword::Stopsignal,
        Keyword::Healthcheck,
        Keyword::Shell,
    ];

    /// The upper-case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::From => "FROM",
            Keyword::Run => "RUN",
            Keyword::Cmd => "CMD",
            Keyword::Label => "LABEL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Expose => "EXPOSE",
            Keyword::Env => "ENV",
            Keyword::Add => "ADD",
            Keyword::Copy => "COPY",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Volume => "VOLUME",
            Keyword::User => "USER",
            Keyword::Workdir => "WORKDIR",
            Keyword::Arg => "ARG",
            Keyword::Onbuild => "ONBUILD",
            Keyword::Stopsignal => "STOPSIGNAL",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Shell => "SHELL",
        }
    }

    /// Case-insensitive lookup.
    pub fn parse(word: &str) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(word))
    }
}

/// One instruction as written.
#[derive(Debug, Clone, Serialize)]
pub struct Instruction {
    /// The instruction.
    pub keyword: Keyword,
    /// Start (line, column of the keyword) and last line (continuations and heredocs included).
    pub span: Span,
    /// The logical line: continuations joined, comments inside them dropped.
    pub original: String,
    /// `--name[=value]` flags before the arguments, quotes removed, not yet expanded.
    pub flags: Vec<Flag>,
    /// The arguments, split the way BuildKit splits them for this instruction.
    pub args: Args,
    /// Heredoc bodies that follow the line, in order.
    pub heredocs: Vec<HeredocBody>,
    /// Comment lines directly above (a stage's description, for FROM).
    pub comments: Vec<String>,
    /// Position of the first argument.
    pub args_line: usize,
    /// Column of the first argument.
    pub args_column: usize,
}

/// A flag of an instruction, e.g. `--from=builder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The flag name without `--`.
    pub name: String,
    /// `None` for a bare `--link`.
    pub value: Option<String>,
    /// Line of the flag.
    pub line: usize,
    /// Column of its `--`.
    pub column: usize,
}

impl Flag {
    /// How many characters `--name[=value]` takes on its line (quotes removed), for carets.
    pub fn width(&self) -> usize {
        2 + self.name.chars().count() + self.value.as_ref().map_or(0, |v| 1 + v.chars().count())
    }
}

/// A heredoc body as read from the file (not expanded, tabs not stripped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeredocBody {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The body lines, with their line endings.
    pub content: String,
    /// Unquoted delimiter: the body is expanded (COPY/ADD).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 if none.
    pub fd: u32,
}

/// A `KEY=value` pair of ENV or LABEL (raw, quotes kept until expansion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key, raw.
    pub key: String,
    /// The value, raw.
    pub value: String,
    /// Line of the pair.
    pub line: usize,
    /// Column of the pair.
    pub column: usize,
}

/// An ARG declaration: `NAME` or `NAME=default` (raw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The ARG name.
    pub name: String,
    /// The default, raw (`ARG NAME` has none).
    pub default: Option<String>,
    /// Line of the declaration.
    pub line: usize,
    /// Column of the declaration.
    pub column: usize,
}

/// The arguments of an instruction, by instruction.
#[derive(Debug, Clone, Serialize)]
pub enum Args {
    /// `FROM image [AS name]`.
    From {
        /// The base as written.
        image: String,
        /// The stage name as written.
        stage_name: Option<String>,
    },
    /// RUN, CMD, ENTRYPOINT: shell form (raw text) or JSON exec form.
    Command(Command),
    /// COPY and ADD: sources (heredoc markers included) then the destination.
    Copy {
        /// Sources as written.
        sources: Vec<String>,
        /// The destination as written.
        dest: String,
        /// JSON form (`COPY ["a", "b"]`).
        json: bool,
    },
    /// ENV pairs.
    Env(Vec<KeyValue>),
    /// LABEL pairs.
    Label(Vec<KeyValue>),
    /// ARG declarations.
    Arg(Vec<ArgDecl>),
    /// EXPOSE words.
    Expose(Vec<String>),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// USER, WORKDIR, STOPSIGNAL, MAINTAINER.
    Single(String),
    /// SHELL argv (always JSON).
    Shell(Vec<String>),
    /// `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Command>),
    /// The trigger instruction of ONBUILD.
    Onbuild(Box<Instruction>),
}
