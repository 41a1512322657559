//! The rule language: declarative predicates on an action, stored with it and evaluated again when
//! it is dispatched.
//!
//! A rule is one comparison, `<path> <op> <literal>`, or a presence test, `<path> exists` /
//! `<path> missing`:
//!
//! * `<path>` — dot-separated field names into the action as JSON,
//!   `{"type": "<action type>", "payload": <payload>}`: `payload.user.status`, `type`. A name is
//!   ASCII letters, digits, `_` or `-`; an array element is addressed by its index
//!   (`payload.items.0.sku`).
//! * `<op>` — `==`, `!=`, `<`, `<=`, `>`, `>=`, or `in`.
//! * `<literal>` — any JSON value (`"active"`, `3`, `2.5`, `true`, `null`); for `in`, a JSON array.
//!
//! `==` and `!=` compare JSON values (numbers by value: `1 == 1.0`). `<`, `<=`, `>`, `>=` compare
//! two numbers, or two strings (byte order); any other pair is false. A path that leads nowhere
//! makes every comparison false except `!=` (true) and `missing` (true). An action's rules all
//! hold, or the action is not dispatched.
//!
//! ```
//! use safejob_core::action::Rule;
//! use serde_json::json;
//!
//! let rule: Rule = r#"payload.user.status == "active""#.parse()?;
//! assert!(rule.holds("email.welcome", &json!({"user": {"status": "active"}})));
//! assert!(!rule.holds("email.welcome", &json!({"user": {"status": "banned"}})));
//! let tier: Rule = r#"payload.tier in ["gold", "silver"]"#.parse()?;
//! assert!(tier.holds("t", &json!({"tier": "gold"})));
//! assert!("payload.x ~= 3".parse::<Rule>().is_err());
//! # Ok::<(), safejob_core::action::RuleError>(())
//! ```

use std::{cmp::Ordering, fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A rule that does not parse. Every variant names the rule's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The rule is empty.
    #[error("empty rule")]
    Empty,
    /// The path is empty or has an empty or invalid field name.
    #[error(
        "rule {rule:?}: invalid path {path:?} (dot-separated names of letters, digits, _ or -)"
    )]
    InvalidPath {
        /// The rule.
        rule: String,
        /// The path.
        path: String,
    },
    /// No operator, or an unknown one, after the path.
    #[error(
        "rule {rule:?}: expected an operator (==, !=, <, <=, >, >=, in, exists, missing) after the path"
    )]
    UnknownOperator {
        /// The rule.
        rule: String,
    },
    /// The literal after the operator is not JSON.
    #[error("rule {rule:?}: the value is not JSON: {reason}")]
    InvalidLiteral {
        /// The rule.
        rule: String,
        /// serde_json's message.
        reason: String,
    },
    /// `in` needs a JSON array.
    #[error("rule {rule:?}: `in` needs a JSON array")]
    InNeedsArray {
        /// The rule.
        rule: String,
    },
    /// A rule is at most 1,000 bytes.
    #[error("rule of {len} bytes: at most 1000")]
    TooLong {
        /// Its length.
        len: usize,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Exists,
    Missing,
}

/// One parsed rule (see the module docs). Stored as its text; parsed again when read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    text: String,
    path: Vec<String>,
    op: Op,
    literal: Value,
}

impl Rule {
    /// The rule's text, as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the rule holds for an action of `action_type` with `payload`.
    pub fn holds(&self, action_type: &str, payload: &Value) -> bool {
        let root = match self.path.first().map(String::as_str) {
            Some("type") => &Value::String(action_type.to_owned()),
            Some("payload") => payload,
            _ => &Value::Null,
        };
        let mut at = Some(root);
        for name in self.path.iter().skip(1) {
            at = at.and_then(|v| match v {
                Value::Object(map) => map.get(name),
                Value::Array(items) => name.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            });
        }
        let found = if matches!(
            self.path.first().map(String::as_str),
            Some("type" | "payload")
        ) {
            at
        } else {
            None
        };
        match (self.op, found) {
            (Op::Exists, v) => v.is_some(),
            (Op::Missing, v) => v.is_none(),
            (Op::Ne, None) => true,
            (_, None) => false,
            (Op::Eq, Some(v)) => json_eq(v, &self.literal),
            (Op::Ne, Some(v)) => !json_eq(v, &self.literal),
            (Op::In, Some(v)) => self
                .literal
                .as_array()
                .is_some_and(|items| items.iter().any(|i| json_eq(v, i))),
            (op, Some(v)) => match order(v, &self.literal) {
                Some(o) => match op {
                    Op::Lt => o == Ordering::Less,
                    Op::Le => o != Ordering::Greater,
                    Op::Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                },
                None => false,
            },
        }
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > 1000 {
            return Err(RuleError::TooLong { len: text.len() });
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(RuleError::Empty);
        }
        let rule = || text.to_owned();
        let path_end = trimmed
            .find(|c: char| c.is_whitespace() || "=!<>".contains(c))
            .unwrap_or(trimmed.len());
        let (path_text, rest) = trimmed.split_at(path_end);
        let path: Vec<String> = path_text.split('.').map(str::to_owned).collect();
        let valid = |name: &String| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !path.iter().all(valid) {
            return Err(RuleError::InvalidPath {
                rule: rule(),
                path: path_text.to_owned(),
            });
        }
        let rest = rest.trim_start();
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("in ", Op::In),
            ("exists", Op::Exists),
            ("missing", Op::Missing),
        ];
        let Some((op, literal)) = ops
            .iter()
            .find_map(|(t, op)| rest.strip_prefix(t).map(|lit| (*op, lit.trim())))
        else {
            return Err(RuleError::UnknownOperator { rule: rule() });
        };
        let literal = match op {
            Op::Exists | Op::Missing => {
                if !literal.is_empty() {
                    return Err(RuleError::UnknownOperator { rule: rule() });
                }
                Value::Null
            }
            _ => serde_json::from_str(literal).map_err(|e| RuleError::InvalidLiteral {
                rule: rule(),
                reason: e.to_string(),
            })?,
        };
        if op == Op::In && !literal.is_array() {
            return Err(RuleError::InNeedsArray { rule: rule() });
        }
        Ok(Self {
            text: text.to_owned(),
            path,
            op,
            literal,
        })
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn holds(rule: &str, payload: Value) -> bool {
        rule.parse::<Rule>()
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
            .holds("user.signup", &payload)
    }

    #[test]
    fn comparisons_follow_the_documented_semantics() {
        let p = json!({"user": {"status": "active", "age": 30, "tags": ["a", "b"]}, "n": 1.0});
        assert!(holds(r#"payload.user.status == "active""#, p.clone()));
        assert!(holds(r#"payload.user.status != "banned""#, p.clone()));
        assert!(holds("payload.user.age >= 18", p.clone()));
        assert!(!holds("payload.user.age < 18", p.clone()));
        assert!(
            holds("payload.n == 1", p.clone()),
            "numbers compare by value"
        );
        assert!(holds(r#"payload.user.tags.1 == "b""#, p.clone()));
        assert!(holds(
            r#"payload.user.status in ["active", "trial"]"#,
            p.clone()
        ));
        assert!(holds(r#"type == "user.signup""#, p.clone()));
        assert!(holds("payload.user exists", p.clone()));
        assert!(holds("payload.nope missing", p.clone()));
        // A missing path: every comparison false except != .
        assert!(!holds("payload.nope == 1", p.clone()));
        assert!(!holds("payload.nope < 1", p.clone()));
        assert!(holds("payload.nope != 1", p.clone()));
        // Mismatched types never order.
        assert!(!holds(r#"payload.user.age < "x""#, p.clone()));
        assert!(!holds("payload.user.status > 3", p));
    }

    #[test]
    fn malformed_rules_are_typed_errors() {
        type Expect = fn(&RuleError) -> bool;
        let cases: [(&str, Expect); 7] = [
            ("", |e| matches!(e, RuleError::Empty)),
            ("payload..x == 1", |e| {
                matches!(e, RuleError::InvalidPath { .. })
            }),
            ("payload.x ~= 1", |e| {
                matches!(e, RuleError::UnknownOperator { .. })
            }),
            ("payload.x == active", |e| {
                matches!(e, RuleError::InvalidLiteral { .. })
            }),
            ("payload.x in 3", |e| {
                matches!(e, RuleError::InNeedsArray { .. })
            }),
            ("payload.x exists 3", |e| {
                matches!(e, RuleError::UnknownOperator { .. })
            }),
            ("payload.x $ 3", |e| {
                matches!(e, RuleError::UnknownOperator { .. })
            }),
        ];
        for (text, ok) in cases {
            match text.parse::<Rule>() {
                Ok(r) => panic!("{text:?} parsed as {r:?}"),
                Err(e) => assert!(ok(&e), "{text:?}: {e:?}"),
            }
        }
        let long = format!("payload.x == \"{}\"", "a".repeat(1000));
        assert!(matches!(
            long.parse::<Rule>(),
            Err(RuleError::TooLong { .. })
        ));
    }

    #[test]
    fn rules_round_trip_through_their_text() {
        let rule: Rule = r#"payload.plan in ["pro"]"#.parse().expect("parses");
        let json = serde_json::to_string(&rule).expect("serializes");
        let back: Rule = serde_json::from_str(&json).expect("parses back");
        assert_eq!(back, rule);
    }
}
