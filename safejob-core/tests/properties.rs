//! Property-based tests (proptest) of the core's input handling: keys built from parts, the
//! canonical JSON behind fingerprints, cron triggers, and the action log's rules. Each property says which deliberate
//! break it was seen to catch.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use proptest::prelude::*;
use safejob_core::{
    Fingerprint, IdempotencyKey, KeyError,
    action::Rule,
    fingerprint::canonical_json,
    key::MAX_KEY_BYTES,
    schedule::{ScheduleError, Trigger},
};
use serde_json::{Map, Number, Value};

// ---------------------------------------------------------------------------------------------
// Keys

/// Parts drawn mostly from the characters that the joining must escape, so that part lists
/// which would collide under a naive join (`["a:b"]` and `["a", "b"]`) come up often.
fn part() -> impl Strategy<Value = String> {
    prop::string::string_regex(r"[a:\\é]{1,6}").expect("a valid regex")
}

fn parts() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(part(), 1..5)
}

/// The part list a key built by `from_parts` was built from: split at unescaped `:`, unescaping
/// `\x` to `x`.
fn split_parts(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => parts.last_mut().expect("one part").extend(chars.next()),
            ':' => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}

proptest! {
    /// `from_parts` is injective: the key's text decodes back to exactly the parts it was built
    /// from, so distinct part lists give distinct keys (and digests). Caught when checked: the
    /// escaping of `:` removed from `from_parts` (`["a:b"]` and `["a", "b"]` then collide).
    #[test]
    fn keys_from_distinct_parts_are_distinct(a in parts(), b in parts()) {
        let ka = IdempotencyKey::from_parts(&a);
        let kb = IdempotencyKey::from_parts(&b);
        if let (Ok(ka), Ok(kb)) = (&ka, &kb) {
            prop_assert_eq!(split_parts(ka.as_str()), a.clone());
            prop_assert_eq!(split_parts(kb.as_str()), b.clone());
            if a != b {
                prop_assert_ne!(ka.as_str(), kb.as_str());
                prop_assert_ne!(ka.digest(), kb.digest());
            } else {
                prop_assert_eq!(ka.digest(), kb.digest());
            }
        }
        // Refused only for being too long (the parts have no control characters).
        for (parts, key) in [(&a, ka), (&b, kb)] {
            if let Err(e) = key {
                let escaped: usize = parts.iter().map(|p| p.len() + p.matches([':', '\\']).count()).sum();
                prop_assert!(matches!(e, KeyError::TooLong { .. }), "{e}");
                prop_assert!(escaped + parts.len() - 1 > MAX_KEY_BYTES);
            }
        }
    }

    /// Any text is accepted or refused with the variant that names what is wrong, never a
    /// panic, and exactly by the documented rules. Caught when checked: the control-character
    /// check removed from `IdempotencyKey::new`.
    #[test]
    fn any_text_is_a_key_or_a_typed_error(
        text in prop_oneof![
            any::<String>(),
            // Control characters (C0, DEL, C1) among others, and texts past the limit.
            r"[a-z:\x00-\x1f\x7f\u{80}-\u{9f}é]{0,300}",
        ],
    ) {
        match IdempotencyKey::new(text.clone()) {
            Ok(key) => {
                prop_assert!(!text.is_empty() && text.len() <= MAX_KEY_BYTES);
                prop_assert!(!text.chars().any(char::is_control));
                prop_assert_eq!(key.as_str(), text.as_str());
            }
            Err(KeyError::Empty) => prop_assert!(text.is_empty()),
            Err(KeyError::TooLong { len, .. }) => prop_assert!(len == text.len() && len > MAX_KEY_BYTES),
            Err(KeyError::ControlCharacter { position }) => {
                let c = text[position..].chars().next().expect("a char at the position");
                prop_assert!(c.is_control());
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// Empty parts are refused by index, never joined into an ambiguous key. Caught when
    /// checked: the empty-part check removed (`["a", ""]` is then `a:`).
    #[test]
    fn an_empty_part_is_refused_by_its_index(mut a in parts(), at in 0usize..5) {
        let at = at.min(a.len());
        a.insert(at, String::new());
        prop_assert_eq!(IdempotencyKey::from_parts(&a).err(), Some(KeyError::EmptyPart { index: at }));
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical JSON and fingerprints

/// Any JSON value (finite numbers only: JSON has no others), a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,6}", inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// `value` written as JSON text with its object entries in the order `rotate` picks and white
/// space between every token: another spelling of the same value.
fn respell(value: &Value, rotate: usize, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            if !entries.is_empty() {
                let by = rotate % entries.len();
                entries.rotate_left(by);
                entries.reverse();
            }
            out.push_str("{ ");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(" ,\n ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(" :\t");
                respell(v, rotate / 2 + 1, out);
            }
            out.push_str(" }");
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                respell(v, rotate + i, out);
            }
            out.push_str(" ]");
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar.to_string());
        }
    }
}

proptest! {
    /// Canonical JSON is invariant under object key order and white space: any spelling of a
    /// value parses to text equal to the value's canonical text, and so to its fingerprint.
    /// Caught when checked: safejob-core's serde_json without `float_roundtrip` (a respelled
    /// float then parses one bit off). The sort in `write_canonical` matters only where
    /// serde_json's `preserve_order` is on somewhere in a build; it is not in this workspace,
    /// whose maps are sorted already, so removing the sort breaks nothing here.
    #[test]
    fn canonical_json_ignores_key_order_and_white_space(value in json(), rotate in 0usize..7) {
        let mut text = String::new();
        respell(&value, rotate, &mut text);
        let reparsed: Value = serde_json::from_str(&text).expect("respelled JSON parses");
        prop_assert_eq!(canonical_json(&reparsed), canonical_json(&value));
        prop_assert_eq!(Fingerprint::of(&reparsed).unwrap(), Fingerprint::of(&value).unwrap());
    }

    /// Canonical JSON is a faithful, white-space-free spelling: it parses back to the same value
    /// (so distinct values give distinct text and fingerprints) and is its own canonical form.
    /// Caught when checked: `write_canonical` writing `", "` between object entries (white
    /// space outside strings); serde_json without `float_roundtrip`.
    #[test]
    fn canonical_json_is_a_faithful_white_space_free_spelling(value in json(), other in json()) {
        let text = canonical_json(&value);
        let back: Value = serde_json::from_str(&text).expect("canonical JSON parses");
        prop_assert_eq!(&back, &value);
        prop_assert_eq!(canonical_json(&back), text.clone());
        prop_assert_eq!(&text, &serde_json::to_string(&value).unwrap());
        if other != value {
            prop_assert_ne!(canonical_json(&other), text);
            prop_assert_ne!(Fingerprint::of(&other).unwrap(), Fingerprint::of(&value).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cron

/// One cron field: its text and the values it allows.
#[derive(Debug, Clone)]
struct Field {
    text: String,
    allows: Vec<u32>,
}

/// A valid field over `lo..=hi`: `*`, a value, a range, a stepped range or wildcard, or a list
/// of values.
/// `*` and `*/step` cover the field's whole range, up to `top` (31 for the days of the month,
/// whose explicit values stop at `hi` = 28).
fn field(lo: u32, hi: u32, top: u32) -> impl Strategy<Value = Field> {
    let all: Vec<u32> = (lo..=hi).collect();
    prop_oneof![
        Just(Field {
            text: "*".into(),
            allows: all.clone()
        }),
        (lo..=hi).prop_map(|v| Field {
            text: v.to_string(),
            allows: vec![v]
        }),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            Field {
                text: format!("{a}-{b}"),
                allows: (a..=b).collect(),
            }
        }),
        (lo..=hi, lo..=hi, 1..=(hi - lo).max(1)).prop_map(|(a, b, step)| {
            let (a, b) = (a.min(b), a.max(b));
            Field {
                text: format!("{a}-{b}/{step}"),
                allows: (a..=b).step_by(step as usize).collect(),
            }
        }),
        (1..=(hi - lo).max(1)).prop_map(move |step| Field {
            text: format!("*/{step}"),
            allows: (lo..=top).step_by(step as usize).collect(),
        }),
        prop::collection::btree_set(lo..=hi, 1..4).prop_map(|set| Field {
            text: set.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            allows: set.into_iter().collect(),
        }),
    ]
}

/// A valid 5-field expression (minute hour day-of-month month day-of-week). Days of the month
/// stop at 28 so that every expression fires; at most one of the two day fields is restricted
/// (with both, cron fires when either matches, which the check below does not model).
fn expression() -> impl Strategy<Value = [Field; 5]> {
    let star = |lo: u32, hi: u32| Field {
        text: "*".into(),
        allows: (lo..=hi).collect(),
    };
    (
        field(0, 59, 59),
        field(0, 23, 23),
        field(1, 28, 31),
        field(1, 12, 12),
        field(0, 6, 6),
        any::<bool>(),
    )
        .prop_map(move |(m, h, dom, mon, dow, by_dom)| {
            if by_dom {
                [m, h, dom, mon, star(0, 6)]
            } else {
                [m, h, star(1, 31), mon, dow]
            }
        })
}

fn text_of(fields: &[Field; 5]) -> String {
    fields
        .iter()
        .map(|f| f.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `t` (UTC) is a run time of `fields` read in UTC.
fn matches(fields: &[Field; 5], t: DateTime<Utc>) -> bool {
    let [m, h, dom, mon, dow] = fields;
    // `*` allows every value, also the days 29 to 31 the generator leaves out.
    let allows = |f: &Field, v: u32| f.text == "*" || f.allows.contains(&v);
    t.second() == 0
        && t.nanosecond() == 0
        && allows(m, t.minute())
        && allows(h, t.hour())
        && allows(dom, t.day())
        && allows(mon, t.month())
        && allows(dow, t.weekday().num_days_from_sunday())
}

/// A start instant between 2000 and 2100.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..4_102_444_800)
        .prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("in range"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every valid expression's next run times are strictly increasing and each matches the
    /// expression (in UTC), and in a time zone with daylight saving they are strictly
    /// increasing too. Caught when checked: `next_after` passing `inclusive` as `true` always
    /// (the same instant comes back: not strictly increasing).
    #[test]
    fn next_run_times_increase_and_match(fields in expression(), start in instant()) {
        let text = text_of(&fields);
        let utc = Trigger::cron("p", &text, "UTC").expect("a valid expression");
        let mut t = start;
        for _ in 0..5 {
            let next = utc.next_after("p", t, false).expect("fires").expect("a next run time");
            prop_assert!(next > t, "{text}: {next} after {t}");
            prop_assert!(matches(&fields, next), "{text}: {next} does not match");
            t = next;
        }
        let berlin = Trigger::cron("p", &text, "Europe/Berlin").expect("a valid expression");
        let mut t = start;
        for _ in 0..5 {
            let next = berlin.next_after("p", t, false).expect("fires").expect("a next run time");
            prop_assert!(next > t, "{text} in Berlin: {next} after {t}");
            t = next;
        }
    }

    /// A field out of its range is a typed error naming the `expression` field. Caught when
    /// checked: `InvalidExpression`'s message without the words ``field `expression` ``.
    #[test]
    fn an_out_of_range_field_is_a_typed_error(fields in expression(), at in 0usize..5, over in 0u32..40) {
        // One past each field's top, and beyond.
        let tops = [60, 24, 32, 13, 8];
        let mut texts: Vec<String> = fields.iter().map(|f| f.text.clone()).collect();
        texts[at] = (tops[at] + over).to_string();
        let text = texts.join(" ");
        match Trigger::cron("bad", &text, "UTC") {
            Err(e @ ScheduleError::InvalidExpression { .. }) => {
                prop_assert!(e.to_string().contains("field `expression`"), "{e}");
            }
            other => prop_assert!(false, "{text}: {other:?}"),
        }
    }

    /// Any text as an expression, and any text as a time zone, is a trigger or a typed error,
    /// never a panic. Caught when checked: `Trigger::cron` parsing the zone with `expect`
    /// instead of `map_err` (a panic on an unknown zone).
    #[test]
    fn any_text_is_a_trigger_or_a_typed_error(text in any::<String>(), zone in ".{0,12}") {
        match Trigger::cron("any", &text, "UTC") {
            Ok(_) | Err(ScheduleError::InvalidExpression { .. }) => {}
            Err(e) => prop_assert!(false, "{e:?}"),
        }
        match Trigger::cron("any", "* * * * *", &zone) {
            Ok(t) => prop_assert_eq!(t.time_zone(), zone.as_str()),
            Err(e) => prop_assert!(matches!(e, ScheduleError::UnknownTimeZone { .. }), "{e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rules of the action log

/// A JSON scalar a rule's literal can spell.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text is a rule or a typed error, never a panic; a rule's text is the text it was
    /// parsed from, and it parses again to the same rule.
    /// Catches: an `expect` / index on the literal's JSON, or text lost on the round trip.
    #[test]
    fn any_text_is_a_rule_or_a_typed_error(text in any::<String>()) {
        if let Ok(rule) = text.parse::<Rule>() {
            prop_assert_eq!(rule.text(), text.as_str());
            prop_assert_eq!(rule.text().parse::<Rule>().ok(), Some(rule));
        }
    }

    /// For a value stored at a path: `==` its own spelling holds, `!=` it does not, `in` a list
    /// holding it holds, and `exists` holds while `missing` does not; on a path that leads
    /// nowhere the opposite of each, except `!=`.
    /// Catches: `!=` not the negation of `==`, or a missing path treated as null (`!=` on a
    /// missing path made false failed here).
    #[test]
    fn comparisons_agree_with_the_stored_value(
        name in "[a-z]{1,5}",
        value in scalar(),
        other in scalar(),
    ) {
        let payload = serde_json::json!({ name.clone(): value });
        let lit = value.to_string();
        let rule = |op: &str, lit: &str| {
            format!("payload.{name} {op} {lit}").parse::<Rule>().expect("a valid rule")
        };
        prop_assert!(rule("==", &lit).holds("t", &payload));
        prop_assert!(!rule("!=", &lit).holds("t", &payload));
        let list = format!("[{other}, {lit}]");
        prop_assert!(rule("in", &list).holds("t", &payload));
        prop_assert_eq!(rule("==", &other.to_string()).holds("t", &payload), other == value);
        let exists: Rule = format!("payload.{name} exists").parse().expect("valid");
        let missing: Rule = format!("payload.{name} missing").parse().expect("valid");
        prop_assert!(exists.holds("t", &payload) && !missing.holds("t", &payload));
        let elsewhere = serde_json::json!({});
        prop_assert!(!rule("==", &lit).holds("t", &elsewhere));
        prop_assert!(rule("!=", &lit).holds("t", &elsewhere));
        prop_assert!(!exists.holds("t", &elsewhere) && missing.holds("t", &elsewhere));
    }
}
