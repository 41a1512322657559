//! Fingerprints of a job's parameters.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::key::{DigestParseError, decode_hex32, encode_hex};

/// SHA-256 of a job's parameters.
///
/// A key reused with different parameters is a *key conflict*: every store compares the stored
/// fingerprint with the one given on every path, including replays of finished keys. A job with
/// no fingerprint matches only rows stored without one.
///
/// [`Fingerprint::of`] hashes a canonical JSON form ([`canonical_json`]: object keys sorted, no
/// white space), so the field order of a struct or map never changes the fingerprint;
/// [`Fingerprint::of_json`] does the same for a job of a named kind, so one key used by two kinds
/// is a conflict too.
///
/// ```
/// use safejob_core::Fingerprint;
/// use serde_json::json;
///
/// let a = Fingerprint::of(&json!({"amount": 500, "currency": "EUR"}))?;
/// let b = Fingerprint::of(&json!({"currency": "EUR", "amount": 500}))?;
/// assert_eq!(a, b);
/// assert_ne!(a, Fingerprint::of(&json!({"amount": 501, "currency": "EUR"}))?);
/// # Ok::<(), safejob_core::FingerprintError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// The parameters could not be turned into JSON to be fingerprinted.
#[derive(Debug, thiserror::Error)]
#[error("cannot fingerprint job parameters: {source}")]
pub struct FingerprintError {
    #[from]
    source: serde_json::Error,
}

impl Fingerprint {
    /// Fingerprints any serializable value through its canonical JSON form.
    pub fn of<T: Serialize + ?Sized>(params: &T) -> Result<Self, FingerprintError> {
        let value = serde_json::to_value(params)?;
        Ok(Self::of_bytes(canonical_json(&value).as_bytes()))
    }

    /// Fingerprints a job of kind `kind` with parameters `params`: SHA-256 of the canonical JSON
    /// of the pair `[kind, params]`, so the field order never matters and the kind always does.
    /// A queued [`GuardedJob`](crate::queue::GuardedJob) gets exactly this by default; a job run
    /// by a [`Runner`](crate::Runner) opts in with one line:
    ///
    /// ```
    /// use safejob_core::{Fingerprint, FingerprintError};
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize)]
    /// struct Refund { order: u64, cents: u64 }
    ///
    /// # fn fingerprint(job: &Refund) -> Result<Option<Fingerprint>, FingerprintError> {
    /// // in `impl SafeJob for Refund`: fn fingerprint(&self) -> ... {
    /// Fingerprint::of_json("refund", job).map(Some)
    /// # }
    /// let a = Fingerprint::of_json("refund", &Refund { order: 7, cents: 500 })?;
    /// assert_eq!(a, Fingerprint::of_json("refund", &Refund { order: 7, cents: 500 })?);
    /// assert_ne!(a, Fingerprint::of_json("refund", &Refund { order: 7, cents: 501 })?);
    /// assert_ne!(a, Fingerprint::of_json("payout", &Refund { order: 7, cents: 500 })?);
    /// # Ok::<(), FingerprintError>(())
    /// ```
    pub fn of_json<T: Serialize + ?Sized>(
        kind: &str,
        params: &T,
    ) -> Result<Self, FingerprintError> {
        let pair = Value::Array(vec![
            Value::String(kind.to_owned()),
            serde_json::to_value(params)?,
        ]);
        Ok(Self::of_bytes(canonical_json(&pair).as_bytes()))
    }

    /// Fingerprints raw bytes (already canonical parameters, a request body, ...).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps 32 stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(hex: &str) -> Result<Self, DigestParseError> {
        decode_hex32(hex).map(Self)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = self.to_hex();
        hex.truncate(12);
        write!(f, "Fingerprint({hex})")
    }
}

/// The canonical JSON text of `value`: object keys sorted (by their UTF-8 bytes), no white
/// space, strings and numbers as serde_json writes them. Equal values give equal text whatever
/// the order their maps were built in.
///
/// ```
/// use safejob_core::fingerprint::canonical_json;
/// use serde_json::json;
///
/// assert_eq!(canonical_json(&json!({"b": 1, "a": [true, null]})), r#"{"a":[true,null],"b":1}"#);
/// ```
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Writes JSON with object keys sorted, whatever map type serde_json was built with
/// (its `preserve_order` feature, enabled anywhere in a build, would otherwise change the text).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn field_order_does_not_matter_but_values_do() {
        let mut m1 = HashMap::new();
        let mut m2 = HashMap::new();
        for i in 0..50 {
            m1.insert(format!("k{i}"), i);
        }
        for i in (0..50).rev() {
            m2.insert(format!("k{i}"), i);
        }
        assert_eq!(Fingerprint::of(&m1).unwrap(), Fingerprint::of(&m2).unwrap());
        let nested_a = json!({"x": {"b": [1, {"d": 1, "c": 2}], "a": null}});
        let nested_b = json!({"x": {"a": null, "b": [1, {"c": 2, "d": 1}]}});
        assert_eq!(
            Fingerprint::of(&nested_a).unwrap(),
            Fingerprint::of(&nested_b).unwrap()
        );
        assert_ne!(
            Fingerprint::of(&json!([1, 2])).unwrap(),
            Fingerprint::of(&json!([2, 1])).unwrap()
        );
    }

    #[test]
    fn canonical_json_ignores_key_order_at_every_depth() {
        // Built in opposite insertion orders; serde_json's map may or may not keep that order.
        let mut a = serde_json::Map::new();
        let mut b = serde_json::Map::new();
        for i in 0..20 {
            a.insert(
                format!("k{i:02}"),
                json!({"y": i, "x": [i, {"q": 1, "p": 2}]}),
            );
        }
        for i in (0..20).rev() {
            b.insert(
                format!("k{i:02}"),
                json!({"x": [i, {"p": 2, "q": 1}], "y": i}),
            );
        }
        let (a, b) = (
            canonical_json(&Value::Object(a)),
            canonical_json(&Value::Object(b)),
        );
        assert_eq!(a, b);
        assert!(
            a.starts_with(r#"{"k00":{"x":[0,{"p":2,"q":1}],"y":0},"k01":"#),
            "{a}"
        );
        assert!(!a.contains(' '));
    }

    #[test]
    fn of_json_covers_the_kind_and_the_parameters() {
        let params = json!({"b": 2, "a": 1});
        let f = Fingerprint::of_json("refund", &params).unwrap();
        assert_eq!(
            f,
            Fingerprint::of_json("refund", &json!({"a": 1, "b": 2})).unwrap()
        );
        assert_eq!(
            f,
            Fingerprint::of_bytes(br#"["refund",{"a":1,"b":2}]"#),
            "the pair [kind, params] in canonical JSON"
        );
        assert_ne!(f, Fingerprint::of_json("payout", &params).unwrap());
        assert_ne!(f, Fingerprint::of(&params).unwrap());
    }

    #[test]
    fn canonical_text_is_stable() {
        let mut s = String::new();
        write_canonical(&json!({"b": "x\"y", "a": [true, 1.5]}), &mut s);
        assert_eq!(s, r#"{"a":[true,1.5],"b":"x\"y"}"#);
    }

    #[test]
    fn unserializable_parameters_are_a_typed_error() {
        let mut bad = HashMap::new();
        bad.insert(vec![1u8], 1);
        let err = Fingerprint::of(&bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot fingerprint job parameters")
        );
    }

    #[test]
    fn hex_round_trip() {
        let f = Fingerprint::of_bytes(b"p");
        assert_eq!(Fingerprint::from_hex(&f.to_hex()).unwrap(), f);
    }

    /// The stored bytes are the digest's (the SQL stores write `as_bytes`), and `Debug` shows a
    /// prefix of the hex.
    #[test]
    fn bytes_round_trip_and_debug_shows_a_prefix() {
        let f = Fingerprint::of_bytes(b"p");
        let bytes: [u8; 32] = Sha256::digest(b"p").into();
        assert_eq!(f.as_bytes(), &bytes);
        assert_eq!(Fingerprint::from_bytes(*f.as_bytes()), f);
        assert_eq!(
            format!("{f:?}"),
            format!("Fingerprint({})", &f.to_hex()[..12])
        );
    }
}
