//! Go templates for `--format`, as the docker CLI evaluates them: Go's printing of values, and
//! docker's `json`, `join`, `split`, `lower`, `upper`, `title` functions and `table` directive.

use serde_json::{json, Map, Value};

use super::format::tabwrite;

fn to_gtmpl(v: &Value) -> gtmpl_value::Value {
    use gtmpl_value::Value as G;
    match v {
        Value::Null => G::Nil,
        Value::Bool(b) => G::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                G::from(u)
            } else if let Some(i) = n.as_i64() {
                G::from(i)
            } else {
                G::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => G::String(s.clone()),
        Value::Array(a) => G::Array(a.iter().map(to_gtmpl).collect()),
        Value::Object(o) => G::Map(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect()),
    }
}

fn from_gtmpl(v: &gtmpl_value::Value) -> Value {
    use gtmpl_value::Value as G;
    match v {
        G::NoValue | G::Nil | G::Function(_) => Value::Null,
        G::Bool(b) => json!(b),
        G::String(s) => json!(s),
        G::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        G::Array(a) => Value::Array(a.iter().map(from_gtmpl).collect()),
        G::Object(m) | G::Map(m) => {
            let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), from_gtmpl(v)))
                    .collect(),
            )
        }
    }
}

/// How Go's fmt prints a value in a template: `[a b]`, `map[k:v]`, `<nil>`.
fn go_print(v: &gtmpl_value::Value) -> String {
    use gtmpl_value::Value as G;
    match v {
        G::NoValue => "<no value>".into(),
        G::Nil => "<nil>".into(),
        G::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        G::Object(m) | G::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_print(&m[*k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        other => other.to_string(),
    }
}

fn arg_str(args: &[gtmpl_value::Value], i: usize) -> String {
    match args.get(i) {
        Some(gtmpl_value::Value::String(s)) => s.clone(),
        Some(v) => go_print(v),
        None => String::new(),
    }
}

fn f_json(args: &[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError> {
    let v = args.first().map(from_gtmpl).unwrap_or(Value::Null);
    Ok(gtmpl_value::Value::String(
        serde_json::to_string(&v).unwrap_or_default(),
    ))
}
fn f_gofmt(args: &[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError> {
    Ok(gtmpl_value::Value::String(
        args.first().map(go_print).unwrap_or_default(),
    ))
}
fn f_join(args: &[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError> {
    let sep = arg_str(args, 1);
    let items: Vec<String> = match args.first() {
        Some(gtmpl_value::Value::Array(a)) => a
            .iter()
            .map(|v| arg_str(std::slice::from_ref(v), 0))
            .collect(),
        Some(v) => vec![go_print(v)],
        None => vec![],
    };
    Ok(gtmpl_value::Value::String(items.join(&sep)))
}
fn f_split(args: &[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError> {
    let (s, sep) = (arg_str(args, 0), arg_str(args, 1));
    Ok(gtmpl_value::Value::Array(
        s.split(sep.as_str())
            .map(|p| gtmpl_value::Value::String(p.into()))
            .collect(),
    ))
}
fn f_lower(args: &[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError> {
    Ok(gtmpl_value::Value::String(arg_str(args, 0).to_lowercase()))
}
fn f_upper(args: &[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError> {
    Ok(gtmpl_value::Value::String(arg_str(args, 0).to_uppercase()))
}
fn f_title(args: &[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError> {
    let s = arg_str(args, 0);
    let mut c = s.chars();
    let t = match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    };
    Ok(gtmpl_value::Value::String(t))
}

/// A parsed `--format` template. Plain field actions (`{{.Config.Cmd}}`) are printed the way Go
/// prints them (`[sh -c x]`), which gtmpl alone does not do.
pub(super) struct Template {
    tmpl: gtmpl::Template,
    table: bool,
}

impl Template {
    pub(super) fn parse(format: &str) -> anyhow::Result<Template> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start().to_string()),
            None => (false, format.to_string()),
        };
        // docker turns the two characters `\t` and `\n` into a tab and a newline.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let body = wrap_plain_fields(&body);
        let mut tmpl = gtmpl::Template::default();
        tmpl.add_funcs(&[
            ("json", f_json as gtmpl_value::Func),
            ("gofmt", f_gofmt),
            ("join", f_join),
            ("split", f_split),
            ("lower", f_lower),
            ("upper", f_upper),
            ("title", f_title),
        ]);
        tmpl.parse(&body)
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
        Ok(Template { tmpl, table })
    }

    pub(super) fn render(&self, v: &Value) -> anyhow::Result<String> {
        self.tmpl
            .render(&gtmpl::Context::from(to_gtmpl(v)))
            .map_err(|e| anyhow::anyhow!("template: {e}"))
    }
}

/// `{{ .A.B }}` → `{{ gofmt .A.B }}`, leaving every other action alone.
fn wrap_plain_fields(t: &str) -> String {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = &rest[i + 2..i + j];
        let (l, core, r) = trim_markers(inner);
        let plain = core.starts_with('.')
            && core
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '_');
        if plain {
            out.push_str(&format!("{{{{{l}gofmt {core}{r}}}}}"));
        } else {
            out.push_str(&rest[i..i + j + 2]);
        }
        rest = &rest[i + j + 2..];
    }
    out.push_str(rest);
    out
}

/// Splits an action's inside into its `- ` trim markers and the trimmed expression.
fn trim_markers(inner: &str) -> (&str, &str, &str) {
    let l = if inner.starts_with("- ") { "- " } else { "" };
    let r = if inner.ends_with(" -") { " -" } else { "" };
    // `{{- -}}`: the markers overlap; there is no expression to wrap.
    let core = inner
        .get(l.len()..inner.len().saturating_sub(r.len()))
        .unwrap_or("")
        .trim();
    (
        if l.is_empty() { " " } else { l },
        core,
        if r.is_empty() { " " } else { r },
    )
}

/// Renders rows through a `--format`; with `table`, a header row from `headers` (field → title)
/// and docker's column alignment.
pub(super) fn render_rows(
    format: &str,
    rows: &[Value],
    headers: &[(&str, &str)],
) -> anyhow::Result<String> {
    if format == "json" {
        let mut s = String::new();
        for r in rows {
            s.push_str(&serde_json::to_string(r)?);
            s.push('\n');
        }
        return Ok(s);
    }
    let t = Template::parse(format)?;
    let mut lines = Vec::new();
    if t.table {
        let h: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        lines.push(t.render(&Value::Object(h))?);
    }
    for r in rows {
        lines.push(t.render(r)?);
    }
    if t.table {
        let cells: Vec<Vec<String>> = lines
            .iter()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        Ok(tabwrite(&cells))
    } else {
        Ok(lines.iter().map(|l| format!("{l}\n")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_print_like_go() {
        let v = json!({"Config": {"Cmd": ["sh", "-c", "x"], "Labels": {"b": "2", "a": "1"}}, "Id": "sha256:ab"});
        let t = Template::parse("{{.Id}} {{.Config.Cmd}} {{json .Config.Cmd}} {{index .Config.Labels \"a\"}} {{join .Config.Cmd \",\"}}").unwrap();
        assert_eq!(
            t.render(&v).unwrap(),
            r#"sha256:ab [sh -c x] ["sh","-c","x"] 1 sh,-c,x"#
        );
        // Overlapping trim markers: whatever gtmpl makes of them, the rewrite must not panic.
        let _ = Template::parse("{{- -}}").map(|t| t.render(&json!({})));
        assert_eq!(wrap_plain_fields("{{- .Id -}}"), "{{- gofmt .Id -}}");
        let t = Template::parse("{{.Config.Labels}}").unwrap();
        assert_eq!(t.render(&v).unwrap(), "map[a:1 b:2]");
    }
}
