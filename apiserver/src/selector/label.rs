//! Label selectors as `k8s.io/apimachinery/pkg/labels` has them: the string syntax
//! (`app=web,tier in (a,b),!canary`), the structured `matchLabels`/`matchExpressions` form,
//! matching against an object's labels, and the canonical text form.
//!
//! The lexer and parser follow Kubernetes' own, token for token, so that the same text is
//! accepted or refused with the same message. Two deliberate simplifications: `==` is kept
//! as [`Operator::Equals`] (it means the same and prints as `=`), and values are kept sorted
//! and without duplicates, which is how Kubernetes prints them anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use super::SelectorError;

/// How a requirement compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// The label is set to one of the values (`key in (a,b)`).
    In,
    /// The label is absent or set to none of the values (`key notin (a,b)`).
    NotIn,
    /// The label is set to the value (`key=v`, `key==v`).
    Equals,
    /// The label is absent or set to something else (`key!=v`).
    NotEquals,
    /// The label is set, to anything (`key`).
    Exists,
    /// The label is not set (`!key`).
    DoesNotExist,
    /// The label is an integer greater than the value (`key>5`).
    GreaterThan,
    /// The label is an integer less than the value (`key<5`).
    LessThan,
}

impl Operator {
    /// Kubernetes' name for the operator (`selection.Operator`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One condition on one label; a selector is the conjunction of its requirements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    op: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// A requirement, checked as Kubernetes' `labels.NewRequirement` checks it.
    pub fn new(
        key: impl Into<String>,
        op: Operator,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        let mut values: Vec<String> = values.into_iter().map(Into::into).collect();
        validate_key(&key)?;
        let wrong = |reason| SelectorError::InvalidValues {
            key: key.clone(),
            operator: op,
            reason,
        };
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(wrong(
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(wrong("exact-match compatibility requires one single value"));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(wrong(
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(wrong(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return Err(wrong(
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
            _ => {}
        }
        for value in &values {
            let errors = label_value_errors(value);
            if !errors.is_empty() {
                return Err(SelectorError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                    reason: errors.join("; "),
                });
            }
        }
        // A set, as Kubernetes holds it: order and repetition carry no meaning.
        values.sort();
        values.dedup();
        Ok(Requirement { key, op, values })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn op(&self) -> Operator {
        self.op
    }

    /// The values, sorted and without duplicates (empty for Exists and DoesNotExist).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a set of labels satisfies the requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = |v: &String| self.values.binary_search(v).is_ok();
        match self.op {
            Operator::In | Operator::Equals => value.is_some_and(listed),
            // Kubernetes selects objects without the label for the negative operators.
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Kubernetes' `Requirement.String()`: `!k`, `k`, `k=v`, `k!=v`, `k in (a,b)`, `k>1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let values = self.values.join(",");
        match self.op {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::Equals => write!(f, "{key}={values}"),
            Operator::NotEquals => write!(f, "{key}!={values}"),
            Operator::GreaterThan => write!(f, "{key}>{values}"),
            Operator::LessThan => write!(f, "{key}<{values}"),
            Operator::In => write!(f, "{key} in ({values})"),
            Operator::NotIn => write!(f, "{key} notin ({values})"),
        }
    }
}

/// A label selector: every requirement must hold. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that selects everything.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Parses the string syntax (`a=b,c in (d,e),!f`); the empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let tokens = lex(text);
        Parser { tokens, at: 0 }
            .parse()
            .map(LabelSelector::from_requirements)
    }

    /// Converts a `metav1.LabelSelector` as Kubernetes' `LabelSelectorAsSelector` does; one
    /// with neither matchLabels nor matchExpressions selects everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key.as_str(),
                Operator::Equals,
                [value.as_str()],
            )?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        operator: other.to_string(),
                    });
                }
            };
            let values = expr.values.iter().flatten().map(String::as_str);
            requirements.push(Requirement::new(expr.key.as_str(), op, values)?);
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// The selector requiring all of `requirements`, kept in key order as Kubernetes keeps them.
    pub fn from_requirements(requirements: impl IntoIterator<Item = Requirement>) -> Self {
        let mut requirements: Vec<Requirement> = requirements.into_iter().collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the selector selects everything (it has no requirements).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object with these labels, if any, is selected (k8s-openapi's
    /// `metadata.labels` is an `Option`; no labels is the same as an empty set).
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.matches(labels.unwrap_or(&NONE))
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical text form, which [`LabelSelector::parse`] reads back unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

/// A token of the selector syntax (Kubernetes' `labels.Token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    End,
    OpenPar,
    ClosedPar,
    Comma,
    /// `!`
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Identifier,
}

/// A token with its text and where it starts.
#[derive(Clone, Debug)]
struct Item<'a> {
    tok: Tok,
    text: &'a str,
    position: usize,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the text into tokens, ending with [`Tok::End`]. Every character either belongs to
/// a symbol, to whitespace, or to an identifier, so lexing cannot fail.
fn lex(text: &str) -> Vec<Item<'_>> {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_whitespace(bytes[i]) {
            i += 1;
        }
        if i == bytes.len() {
            items.push(Item {
                tok: Tok::End,
                text: "",
                position: i,
            });
            return items;
        }
        let start = i;
        let tok = if is_special(bytes[i]) {
            // Longest match, as Kubernetes' scanSpecialSymbol: only `!=` and `==` have two
            // characters, and every single special character is a token of its own.
            let pair = bytes.get(i..i + 2);
            let tok = match (bytes[i], pair) {
                (_, Some(b"!=")) => Tok::NotEquals,
                (_, Some(b"==")) => Tok::DoubleEquals,
                (b'=', _) => Tok::Equals,
                (b'!', _) => Tok::Not,
                (b'(', _) => Tok::OpenPar,
                (b')', _) => Tok::ClosedPar,
                (b',', _) => Tok::Comma,
                (b'>', _) => Tok::GreaterThan,
                _ => Tok::LessThan,
            };
            i += if matches!(tok, Tok::NotEquals | Tok::DoubleEquals) {
                2
            } else {
                1
            };
            tok
        } else {
            while i < bytes.len() && !is_whitespace(bytes[i]) && !is_special(bytes[i]) {
                i += 1;
            }
            match &text[start..i] {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Identifier,
            }
        };
        items.push(Item {
            tok,
            text: &text[start..i],
            position: start,
        });
    }
}

/// Whether the parser expects a key or operator (keywords are keywords) or a value (where
/// `in` and `notin` are ordinary identifiers), as in Kubernetes' `ParserContext`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// A recursive-descent parser over the tokens, shaped like Kubernetes' `labels.Parser`.
struct Parser<'a> {
    tokens: Vec<Item<'a>>,
    at: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl<'a> Parser<'a> {
    fn lookahead(&self, context: Context) -> (Tok, &'a str, usize) {
        // The lexer always ends with End and consume never moves past it, so `at` is valid.
        let item = &self.tokens[self.at.min(self.tokens.len() - 1)];
        let tok = match item.tok {
            Tok::In | Tok::NotIn if context == Context::Values => Tok::Identifier,
            t => t,
        };
        (tok, item.text, item.position)
    }

    fn consume(&mut self, context: Context) -> (Tok, &'a str, usize) {
        let found = self.lookahead(context);
        if found.0 != Tok::End {
            self.at += 1;
        }
        found
    }

    fn syntax(found: &str, position: usize, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            position,
            found: found.to_string(),
            expected,
        }
    }

    fn parse(mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, text, position) = self.lookahead(Context::Values);
            match tok {
                Tok::Identifier | Tok::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| SelectorError::Requirement(Box::new(e)))?;
                    requirements.push(r);
                    let (tok, text, position) = self.consume(Context::Values);
                    match tok {
                        Tok::End => return Ok(requirements),
                        Tok::Comma => {
                            let (next, text, position) = self.lookahead(Context::Values);
                            if next != Tok::Identifier && next != Tok::Not {
                                return Err(Self::syntax(text, position, "identifier after ','"));
                            }
                        }
                        _ => return Err(Self::syntax(text, position, "',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(requirements),
                _ => {
                    return Err(Self::syntax(
                        text,
                        position,
                        "!, identifier, or 'end of string'",
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, unary) = self.key_and_inferred_operator()?;
        if let Some(op) = unary {
            return Requirement::new(key, op, Vec::<String>::new());
        }
        let op = self.operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.values()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, op, values)
    }

    /// The key, and Exists or DoesNotExist when nothing but `,` or the end follows it.
    fn key_and_inferred_operator(&mut self) -> Result<(&'a str, Option<Operator>), SelectorError> {
        let (mut tok, mut text, mut position) = self.consume(Context::Values);
        let negated = tok == Tok::Not;
        if negated {
            (tok, text, position) = self.consume(Context::Values);
        }
        if tok != Tok::Identifier {
            return Err(Self::syntax(text, position, "identifier"));
        }
        validate_key(text)?;
        if negated {
            // `!key` takes no operator; anything after it is reported by the caller.
            return Ok((text, Some(Operator::DoesNotExist)));
        }
        let (next, _, _) = self.lookahead(Context::Values);
        let unary = matches!(next, Tok::End | Tok::Comma).then_some(Operator::Exists);
        Ok((text, unary))
    }

    fn operator(&mut self) -> Result<Operator, SelectorError> {
        let (tok, text, position) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Equals | Tok::DoubleEquals => Operator::Equals,
            Tok::NotEquals => Operator::NotEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            _ => return Err(Self::syntax(text, position, BINARY_OPERATORS)),
        })
    }

    /// `(a, b, c)`; empty entries (`()`, `(a,)`, `(,a)`) stand for the empty value.
    fn values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, text, position) = self.consume(Context::Values);
        if tok != Tok::OpenPar {
            return Err(Self::syntax(text, position, "'('"));
        }
        let (tok, text, position) = self.lookahead(Context::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let values = self.identifier_list()?;
                let (tok, text, position) = self.consume(Context::Values);
                if tok != Tok::ClosedPar {
                    return Err(Self::syntax(text, position, "')'"));
                }
                Ok(values)
            }
            Tok::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(Self::syntax(text, position, "',', ')' or identifier")),
        }
    }

    fn identifier_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values = Vec::new();
        loop {
            let (tok, text, position) = self.consume(Context::Values);
            match tok {
                Tok::Identifier => {
                    values.push(text.to_string());
                    let (next, text, position) = self.lookahead(Context::Values);
                    match next {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(values),
                        _ => return Err(Self::syntax(text, position, "',' or ')'")),
                    }
                }
                Tok::Comma => {
                    // A comma with nothing before or after it contributes the empty value.
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.lookahead(Context::Values).0 {
                        Tok::ClosedPar => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Tok::Comma => {
                            self.consume(Context::Values);
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(Self::syntax(text, position, "',', or identifier")),
            }
        }
    }

    /// The value after `=`, `!=`, `>` or `<`; nothing (`a=`) is the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        let (tok, _, _) = self.lookahead(Context::Values);
        if matches!(tok, Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        let (tok, text, position) = self.consume(Context::Values);
        if tok == Tok::Identifier {
            Ok(text.to_string())
        } else {
            Err(Self::syntax(text, position, "identifier"))
        }
    }
}

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Kubernetes' `validation.RegexError`, spacing included, so messages compare equal.
fn regex_error(msg: &str, format: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{format}')",
        examples.join(" or ")
    )
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, without a regex engine.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_subdomain(s: &str) -> bool {
    let lower_alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.split('.').all(|label| {
        let b = label.as_bytes();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                lower_alnum(first)
                    && lower_alnum(last)
                    && b.iter().all(|c| lower_alnum(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

/// Kubernetes' `validation.IsQualifiedName`: an optional DNS subdomain prefix and `/`, then
/// a name of at most 63 characters.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errors.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    let e = regex_error(
                        DNS1123_SUBDOMAIN_MSG,
                        DNS1123_SUBDOMAIN_FMT,
                        &["example.com"],
                    );
                    errors.push(format!("prefix part {e}"));
                }
            }
            *name
        }
        _ => {
            let e = regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            );
            return vec![format!(
                "a qualified name {e} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        let e = regex_error(
            QUALIFIED_NAME_MSG,
            QUALIFIED_NAME_FMT,
            &["MyName", "my.name", "123-abc"],
        );
        errors.push(format!("name part {e}"));
    }
    errors
}

/// Kubernetes' `validation.IsValidLabelValue`: empty, or a name part of at most 63 characters.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        let format = format!("({QUALIFIED_NAME_FMT})?");
        errors.push(regex_error(
            LABEL_VALUE_MSG,
            &format,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let errors = qualified_name_errors(key);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidKey {
            key: key.to_string(),
            reason: errors.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str) -> LabelSelector {
        match LabelSelector::parse(text) {
            Ok(s) => s,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match LabelSelector::parse(text) {
            Ok(s) => panic!("{text:?} should not parse, got {s}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_operator_of_the_string_syntax_parses() {
        let s = parse("a=b, c==d,e!=f,g in (x, y),h notin (z),i,!j,k>5,l<7");
        let ops: Vec<Operator> = s.requirements().iter().map(Requirement::op).collect();
        use Operator::*;
        assert_eq!(
            ops,
            [
                Equals,
                Equals,
                NotEquals,
                In,
                NotIn,
                Exists,
                DoesNotExist,
                GreaterThan,
                LessThan
            ]
        );
        assert_eq!(s.requirements()[3].values(), ["x", "y"]);
        assert_eq!(
            s.to_string(),
            "a=b,c=d,e!=f,g in (x,y),h notin (z),i,!j,k>5,l<7"
        );
    }

    #[test]
    fn the_empty_string_selects_everything() {
        for text in ["", "   ", "\t\n"] {
            let s = parse(text);
            assert!(s.is_empty());
            assert!(s.matches(&labels(&[])));
            assert!(s.matches_opt(None));
            assert_eq!(s.to_string(), "");
        }
    }

    #[test]
    fn requirements_are_sorted_by_key_and_values_are_a_sorted_set() {
        let s = parse("z=1,a in (c,b,c)");
        assert_eq!(s.to_string(), "a in (b,c),z=1");
    }

    #[test]
    fn canonical_text_parses_back_to_the_same_selector() {
        for text in [
            "a=b",
            "a=",
            "a in ()",
            "a in (,x)",
            "a notin (x,y),!b,c",
            "example.com/app==web",
            "in in (in,notin)",
            "x>3",
            "k!=",
        ] {
            let s = parse(text);
            assert_eq!(parse(&s.to_string()), s, "{text:?} printed as {s}");
        }
    }

    #[test]
    fn empty_entries_in_a_value_list_stand_for_the_empty_value() {
        assert_eq!(parse("a in ()").requirements()[0].values(), [""]);
        assert_eq!(parse("a in (,x)").requirements()[0].values(), ["", "x"]);
        assert_eq!(parse("a in (x,)").requirements()[0].values(), ["", "x"]);
        assert_eq!(
            parse("a in (x,,y)").requirements()[0].values(),
            ["", "x", "y"]
        );
        assert_eq!(parse("a=,b").requirements()[0].values(), [""]);
    }

    #[test]
    fn keywords_are_ordinary_identifiers_where_a_key_or_value_is_expected() {
        let s = parse("in=notin");
        assert_eq!(s.requirements()[0].key(), "in");
        assert_eq!(s.requirements()[0].values(), ["notin"]);
    }

    #[test]
    fn equality_requires_the_key_with_that_value() {
        let s = parse("app=web");
        assert!(s.matches(&labels(&[("app", "web"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn notin_matches_when_the_key_is_absent() {
        let s = parse("tier notin (db)");
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("tier", "web")])));
        assert!(!s.matches(&labels(&[("tier", "db")])));
    }

    #[test]
    fn not_equals_matches_when_the_key_is_absent() {
        let s = parse("tier!=db");
        assert!(s.matches_opt(None));
        assert!(!s.matches(&labels(&[("tier", "db")])));
    }

    #[test]
    fn exists_and_does_not_exist_look_only_at_the_key() {
        assert!(parse("a").matches(&labels(&[("a", "")])));
        assert!(!parse("a").matches(&labels(&[])));
        assert!(parse("!a").matches(&labels(&[("b", "x")])));
        assert!(!parse("!a").matches(&labels(&[("a", "x")])));
    }

    #[test]
    fn greater_and_less_than_compare_integers_and_refuse_other_labels() {
        let s = parse("gen>5");
        assert!(s.matches(&labels(&[("gen", "6")])));
        assert!(!s.matches(&labels(&[("gen", "5")])));
        assert!(!s.matches(&labels(&[("gen", "six")])));
        assert!(!s.matches(&labels(&[])));
        assert!(parse("gen<5").matches(&labels(&[("gen", "-1")])));
        assert!(parse_error("gen>x").contains("the value must be an integer"));
    }

    #[test]
    fn syntax_errors_name_the_token_and_what_was_expected() {
        assert_eq!(
            parse_error("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_error("a,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            parse_error("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            parse_error("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            parse_error("a in x"),
            "unable to parse requirement: found 'x', expected: '('"
        );
        assert_eq!(
            parse_error("a in (x y)"),
            "unable to parse requirement: found 'y', expected: ',' or ')'"
        );
        assert_eq!(
            parse_error("a in (x"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            parse_error("a = = b"),
            "unable to parse requirement: found '=', expected: identifier"
        );
        assert_eq!(
            parse_error("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn syntax_errors_carry_the_position_of_the_token() {
        let Err(SelectorError::Requirement(inner)) = LabelSelector::parse("app in (a b)") else {
            panic!("expected a requirement error");
        };
        assert_eq!(
            *inner,
            SelectorError::Syntax {
                position: 10,
                found: "b".into(),
                expected: "',' or ')'",
            }
        );
    }

    #[test]
    fn keys_must_be_qualified_names() {
        assert_eq!(
            parse_error("-a=b"),
            "unable to parse requirement: invalid label key \"-a\": name part must consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert!(
            parse_error("Example.com/a").contains("prefix part a lowercase RFC 1123 subdomain")
        );
        assert!(parse_error("/a").contains("prefix part must be non-empty"));
        assert!(parse_error("a/b/c").contains("a qualified name must consist"));
        assert!(
            parse_error(&"k".repeat(64)).contains("name part must be no more than 63 characters")
        );
        parse(&format!("{}/{}", "p".repeat(200), "k".repeat(63)));
    }

    #[test]
    fn values_must_be_label_values() {
        assert!(
            parse_error("a=-b").starts_with(
                "unable to parse requirement: invalid label value: \"-b\": at key: \"a\": a valid label must be"
            )
        );
        assert!(
            parse_error(&format!("a={}", "v".repeat(64)))
                .contains("must be no more than 63 characters")
        );
        parse("a=A_b.c-9");
    }

    fn k8s(value: serde_json::Value) -> metav1::LabelSelector {
        match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => panic!("not a LabelSelector: {e}"),
        }
    }

    #[test]
    fn a_k8s_selector_combines_match_labels_and_match_expressions() {
        let s = LabelSelector::from_k8s(&k8s(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["x"]},
                {"key": "team", "operator": "Exists", "values": []},
            ],
        })));
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            s.to_string(),
            "app=web,!canary,team,tier in (a,b),zone notin (x)"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "t")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
    }

    #[test]
    fn an_empty_k8s_selector_selects_everything() {
        let s = LabelSelector::from_k8s(&metav1::LabelSelector::default());
        assert_eq!(s, Ok(LabelSelector::everything()));
    }

    #[test]
    fn k8s_selectors_with_the_wrong_values_for_their_operator_are_refused() {
        let err = |v| match LabelSelector::from_k8s(&k8s(v)) {
            Ok(s) => panic!("should be refused, got {s}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "invalid requirement on key \"a\": for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
            ),
            "invalid requirement on key \"a\": values set must be empty for exists and does not exist"
        );
        assert_eq!(
            err(
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]})
            ),
            "\"in\" is not a valid label selector operator"
        );
        assert!(
            err(serde_json::json!({"matchLabels": {"a": "b c"}}))
                .starts_with("invalid label value")
        );
    }
}
