//! An LDAP search filter (RFC 4511 §4.5.1) as a tree, as the core decoded it from the wire: a
//! plugin walks it instead of parsing text again. [`LdapFilter`]'s `Display` is the RFC 4515
//! text the core logs (`ldap_search.json`) and ABI 1.1 plugins receive.
//!
//! Nesting is bounded by [`MAX_FILTER_DEPTH`]: the core refuses (and counts) a search whose
//! filter is nested deeper, so no tree a plugin receives is deeper, and every recursive walk
//! here (encode, decode, render) stays within that bound.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// The deepest filter the core hands on; the root is depth 0. Real clients stay far below it
/// (AD tools nest three or four levels).
pub const MAX_FILTER_DEPTH: usize = 32;

/// A search filter. Strings and values borrow from the batch; values are bytes because an
/// assertion value need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LdapFilter<'a> {
    And(#[serde(borrow)] Vec<LdapFilter<'a>>),
    Or(#[serde(borrow)] Vec<LdapFilter<'a>>),
    Not(#[serde(borrow)] Box<LdapFilter<'a>>),
    Equality(#[serde(borrow)] Assertion<'a>),
    Substrings(#[serde(borrow)] Substrings<'a>),
    GreaterOrEqual(#[serde(borrow)] Assertion<'a>),
    LessOrEqual(#[serde(borrow)] Assertion<'a>),
    /// The attribute is present (`(cn=*)`).
    Present(#[serde(borrow)] Cow<'a, str>),
    Approx(#[serde(borrow)] Assertion<'a>),
    Extensible(#[serde(borrow)] Extensible<'a>),
}

/// `attribute` compared with `value` (equality, ordering or approximate match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assertion<'a> {
    #[serde(borrow)]
    pub attribute: Cow<'a, str>,
    #[serde(borrow)]
    pub value: Cow<'a, [u8]>,
}

/// A substring match: `parts` in wire order (RFC 4511 wants at most one initial, first, and one
/// final, last; the wire may say otherwise and is kept as it came).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Substrings<'a> {
    #[serde(borrow)]
    pub attribute: Cow<'a, str>,
    #[serde(borrow)]
    pub parts: Vec<Substring<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Substring<'a> {
    Initial(#[serde(borrow)] Cow<'a, [u8]>),
    Any(#[serde(borrow)] Cow<'a, [u8]>),
    Final(#[serde(borrow)] Cow<'a, [u8]>),
}

/// An extensible match (`(userAccountControl:1.2.840.113556.1.4.803:=2)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extensible<'a> {
    pub rule: Option<Cow<'a, str>>,
    pub attribute: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub value: Cow<'a, [u8]>,
    pub dn_attributes: bool,
}

impl<'a> LdapFilter<'a> {
    /// `(attribute=value)`, e.g. for a test.
    pub fn equality(attribute: &'a str, value: &'a str) -> LdapFilter<'a> {
        LdapFilter::Equality(Assertion {
            attribute: attribute.into(),
            value: value.as_bytes().into(),
        })
    }

    /// `(attribute=*)`.
    pub fn present(attribute: &'a str) -> LdapFilter<'a> {
        LdapFilter::Present(attribute.into())
    }

    /// The same filter owning its strings, to keep past the buffer it was decoded from.
    pub fn into_owned(self) -> LdapFilter<'static> {
        fn owned(text: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(text.into_owned())
        }
        fn bytes(value: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
            Cow::Owned(value.into_owned())
        }
        let assertion = |a: Assertion<'_>| Assertion {
            attribute: owned(a.attribute),
            value: bytes(a.value),
        };
        match self {
            LdapFilter::And(items) => {
                LdapFilter::And(items.into_iter().map(LdapFilter::into_owned).collect())
            }
            LdapFilter::Or(items) => {
                LdapFilter::Or(items.into_iter().map(LdapFilter::into_owned).collect())
            }
            LdapFilter::Not(inner) => LdapFilter::Not(Box::new(inner.into_owned())),
            LdapFilter::Equality(a) => LdapFilter::Equality(assertion(a)),
            LdapFilter::GreaterOrEqual(a) => LdapFilter::GreaterOrEqual(assertion(a)),
            LdapFilter::LessOrEqual(a) => LdapFilter::LessOrEqual(assertion(a)),
            LdapFilter::Approx(a) => LdapFilter::Approx(assertion(a)),
            LdapFilter::Present(attribute) => LdapFilter::Present(owned(attribute)),
            LdapFilter::Substrings(s) => LdapFilter::Substrings(Substrings {
                attribute: owned(s.attribute),
                parts: s
                    .parts
                    .into_iter()
                    .map(|part| match part {
                        Substring::Initial(v) => Substring::Initial(bytes(v)),
                        Substring::Any(v) => Substring::Any(bytes(v)),
                        Substring::Final(v) => Substring::Final(bytes(v)),
                    })
                    .collect(),
            }),
            LdapFilter::Extensible(m) => LdapFilter::Extensible(Extensible {
                rule: m.rule.map(owned),
                attribute: m.attribute.map(owned),
                value: bytes(m.value),
                dn_attributes: m.dn_attributes,
            }),
        }
    }

    fn render(&self, out: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        if depth >= MAX_FILTER_DEPTH {
            // Only a tree built by hand gets here (the core refuses deeper ones): the rest is
            // cut, visibly, rather than recursing without bound.
            return out.write_str("(...)");
        }
        out.write_str("(")?;
        match self {
            LdapFilter::And(items) | LdapFilter::Or(items) => {
                out.write_str(if matches!(self, LdapFilter::And(_)) {
                    "&"
                } else {
                    "|"
                })?;
                for item in items {
                    item.render(out, depth + 1)?;
                }
            }
            LdapFilter::Not(inner) => {
                out.write_str("!")?;
                inner.render(out, depth + 1)?;
            }
            LdapFilter::Equality(a)
            | LdapFilter::GreaterOrEqual(a)
            | LdapFilter::LessOrEqual(a)
            | LdapFilter::Approx(a) => {
                out.write_str(&a.attribute)?;
                out.write_str(match self {
                    LdapFilter::GreaterOrEqual(_) => ">=",
                    LdapFilter::LessOrEqual(_) => "<=",
                    LdapFilter::Approx(_) => "~=",
                    _ => "=",
                })?;
                escape(&a.value, out)?;
            }
            LdapFilter::Present(attribute) => {
                out.write_str(attribute)?;
                out.write_str("=*")?;
            }
            LdapFilter::Substrings(s) => {
                out.write_str(&s.attribute)?;
                out.write_str("=")?;
                // initial*any*any*final, each part optional: one star between consecutive parts.
                for part in &s.parts {
                    if let Substring::Initial(v) = part {
                        escape(v, out)?;
                    }
                }
                out.write_str("*")?;
                for part in &s.parts {
                    if let Substring::Any(v) = part {
                        escape(v, out)?;
                        out.write_str("*")?;
                    }
                }
                for part in &s.parts {
                    if let Substring::Final(v) = part {
                        escape(v, out)?;
                    }
                }
            }
            LdapFilter::Extensible(m) => {
                if let Some(attribute) = &m.attribute {
                    out.write_str(attribute)?;
                }
                if m.dn_attributes {
                    out.write_str(":dn")?;
                }
                if let Some(rule) = &m.rule {
                    out.write_str(":")?;
                    out.write_str(rule)?;
                }
                out.write_str(":=")?;
                escape(&m.value, out)?;
            }
        }
        out.write_str(")")
    }
}

/// RFC 4515 text, as the core logs it.
impl fmt::Display for LdapFilter<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(out, 0)
    }
}

/// RFC 4515 §3 value escaping: the special characters, and every byte of a value that is not
/// UTF-8.
fn escape(value: &[u8], out: &mut fmt::Formatter<'_>) -> fmt::Result {
    match core::str::from_utf8(value) {
        Ok(text) => {
            for c in text.chars() {
                match c {
                    '*' | '(' | ')' | '\\' | '\0' => write!(out, "\\{:02x}", c as u32)?,
                    c => write!(out, "{c}")?,
                }
            }
        }
        Err(_) => {
            for b in value {
                write!(out, "\\{b:02x}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn renders_rfc4515_text_with_escapes() {
        let filter = LdapFilter::And(vec![
            LdapFilter::equality("a", "us(e)r*\\"),
            LdapFilter::Not(Box::new(LdapFilter::present("c"))),
            LdapFilter::Substrings(Substrings {
                attribute: "cn".into(),
                parts: vec![
                    Substring::Initial(b"B".as_slice().into()),
                    Substring::Any(b"o".as_slice().into()),
                    Substring::Final(b"b".as_slice().into()),
                ],
            }),
            LdapFilter::Extensible(Extensible {
                rule: Some("1.2.840.113556.1.4.803".into()),
                attribute: Some("userAccountControl".into()),
                value: b"2".as_slice().into(),
                dn_attributes: false,
            }),
            LdapFilter::GreaterOrEqual(Assertion {
                attribute: "n".into(),
                value: [0xff, 0x01].as_slice().into(),
            }),
        ]);
        assert_eq!(
            filter.to_string(),
            r"(&(a=us\28e\29r\2a\5c)(!(c=*))(cn=B*o*b)(userAccountControl:1.2.840.113556.1.4.803:=2)(n>=\ff\01))"
        );
    }

    #[test]
    fn round_trips_through_postcard_borrowing_from_the_buffer() {
        let filter = LdapFilter::Or(vec![
            LdapFilter::equality("objectClass", "user"),
            LdapFilter::equality("cn", "x"),
        ]);
        let wire = postcard::to_allocvec(&filter).expect("encodes");
        let decoded: LdapFilter = postcard::from_bytes(&wire).expect("decodes");
        assert_eq!(decoded, filter);
        let LdapFilter::Or(items) = &decoded else {
            panic!("{decoded:?}")
        };
        assert!(matches!(
            &items[0],
            LdapFilter::Equality(Assertion {
                attribute: Cow::Borrowed(_),
                value: Cow::Borrowed(b"user")
            })
        ));
        assert_eq!(decoded.clone().into_owned(), filter);
    }

    #[test]
    fn a_tree_built_deeper_than_the_bound_renders_cut_without_recursing_further() {
        let mut deep = LdapFilter::present("c");
        for _ in 0..10_000 {
            deep = LdapFilter::Not(Box::new(deep));
        }
        let text = deep.to_string();
        assert!(text.starts_with(&"(!".repeat(MAX_FILTER_DEPTH)));
        assert!(text.contains("(...)"));
        // Dropping a deep Box chain recurses too: take it apart from the top instead.
        while let LdapFilter::Not(inner) = deep {
            deep = *inner;
        }
    }
}
