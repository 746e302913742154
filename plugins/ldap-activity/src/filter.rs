//! Which LDAP search filters enumerate: a filter that names no particular object, only a class
//! of them (`(objectClass=user)`, `(&(objectCategory=person)(objectClass=user))`,
//! `(sAMAccountType=805306368)`, `(objectClass=*)`), returns every object of that class under
//! the search base. A lookup names what it wants (`(sAMAccountName=alice)`, `(cn=Bob*)`).
//!
//! Filters arrive as the tree the core decoded from the wire ([`LdapFilter`]).

use vigil_plugin_sdk::ldap::{Assertion, Substring, MAX_FILTER_DEPTH};
use vigil_plugin_sdk::LdapFilter;

/// What kinds of directory object an enumerating filter lists, as a bit set. They decide the
/// ATT&CK technique: accounts, groups or computers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const ACCOUNTS: Kinds = Kinds(1);
    pub const GROUPS: Kinds = Kinds(2);
    pub const COMPUTERS: Kinds = Kinds(4);
    /// Any other class (organizational units, policies, trusts, objects holding an attribute).
    pub const OTHER: Kinds = Kinds(8);
    pub const EVERYTHING: Kinds = Kinds(1 | 2 | 4 | 8);

    pub const fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    pub const fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn from_bits(bits: u8) -> Kinds {
        Kinds(bits & Kinds::EVERYTHING.0)
    }
}

/// How much of the directory a filter (or part of one) can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Names particular objects: an equality or substring match on an identifying attribute.
    Selective,
    /// Narrows nothing on its own: a negation, a range, a bitwise flag test.
    Neutral,
    /// Every object of these classes.
    Class(Kinds),
}

/// Attributes whose values are classes of object rather than identities.
const CLASS_ATTRIBUTES: [&str; 3] = ["objectclass", "objectcategory", "samaccounttype"];

/// The kinds of object `filter` lists when it enumerates, `None` when it looks particular
/// objects up or is unreadable (an empty attribute name; unreadable filters are not guessed at).
pub fn enumerates(filter: &LdapFilter<'_>) -> Option<Kinds> {
    match reach(filter, 0)? {
        Reach::Class(kinds) => Some(kinds),
        Reach::Selective | Reach::Neutral => None,
    }
}

/// Whether a search base is the root of a naming context: only `dc=` components (the domain
/// itself, `dc=corp,dc=local`), or the empty base a global catalog search starts from.
pub fn is_domain_root(base: &str) -> bool {
    let base = base.trim();
    base.is_empty()
        || base.split(',').all(|rdn| {
            rdn.trim().split_once('=').is_some_and(|(attr, value)| {
                attr.trim().eq_ignore_ascii_case("dc") && !value.trim().is_empty()
            })
        })
}

fn reach(filter: &LdapFilter<'_>, depth: usize) -> Option<Reach> {
    // The core hands on no deeper tree; one built by hand is not walked further.
    if depth >= MAX_FILTER_DEPTH {
        return None;
    }
    let parts = |items: &[LdapFilter<'_>]| -> Option<Vec<Reach>> {
        items.iter().map(|item| reach(item, depth + 1)).collect()
    };
    let named = |attribute: &str| (!attribute.is_empty()).then(|| attribute.to_ascii_lowercase());
    Some(match filter {
        LdapFilter::And(items) => and(&parts(items)?),
        LdapFilter::Or(items) => or(&parts(items)?),
        LdapFilter::Not(inner) => {
            reach(inner, depth + 1)?;
            // "Everything except X" narrows nothing by itself.
            Reach::Neutral
        }
        LdapFilter::Equality(Assertion { attribute, value }) => {
            let attribute = named(attribute)?;
            if CLASS_ATTRIBUTES.contains(&attribute.as_str()) {
                Reach::Class(class_kinds(&attribute, value))
            } else {
                Reach::Selective
            }
        }
        LdapFilter::Approx(Assertion { attribute, .. }) => {
            named(attribute)?;
            Reach::Selective
        }
        // Ranges (`pwdLastSet<=...`) and extensible matches (`userAccountControl:1.2.840.
        // 113556.1.4.803:=2`) select by a property many objects share.
        LdapFilter::GreaterOrEqual(Assertion { attribute, .. })
        | LdapFilter::LessOrEqual(Assertion { attribute, .. }) => {
            named(attribute)?;
            Reach::Neutral
        }
        LdapFilter::Extensible(_) => Reach::Neutral,
        LdapFilter::Present(attribute) => present(&named(attribute)?),
        LdapFilter::Substrings(substrings) => {
            let attribute = named(&substrings.attribute)?;
            // No part with content (`(cn=*)` sent as a substring match) asks for presence.
            let empty = substrings.parts.iter().all(|part| match part {
                Substring::Initial(v) | Substring::Final(v) => v.is_empty(),
                Substring::Any(_) => false,
            });
            if empty {
                present(&attribute)
            } else {
                Reach::Selective
            }
        }
    })
}

/// Every object that has the (lower-case) attribute at all.
fn present(attribute: &str) -> Reach {
    Reach::Class(if CLASS_ATTRIBUTES.contains(&attribute) {
        Kinds::EVERYTHING
    } else if attribute == "serviceprincipalname" {
        Kinds::ACCOUNTS.union(Kinds::COMPUTERS)
    } else {
        Kinds::OTHER
    })
}

/// An AND is as particular as its most particular part: one identifying term makes it a lookup.
fn and(parts: &[Reach]) -> Reach {
    if parts.contains(&Reach::Selective) {
        return Reach::Selective;
    }
    classes(parts).map_or(Reach::Neutral, Reach::Class)
}

/// An OR reaches as far as its broadest part.
fn or(parts: &[Reach]) -> Reach {
    if let Some(kinds) = classes(parts) {
        return Reach::Class(kinds);
    }
    if parts.contains(&Reach::Neutral) {
        Reach::Neutral
    } else {
        Reach::Selective
    }
}

fn classes(parts: &[Reach]) -> Option<Kinds> {
    parts
        .iter()
        .filter_map(|part| match part {
            Reach::Class(kinds) => Some(*kinds),
            _ => None,
        })
        .reduce(Kinds::union)
}

/// What a class value stands for: `user`, `CN=Person,CN=Schema,...`, `805306368`.
fn class_kinds(attribute: &str, value: &[u8]) -> Kinds {
    let Ok(value) = core::str::from_utf8(value) else {
        return Kinds::OTHER;
    };
    let value = value.trim().to_ascii_lowercase();
    if attribute == "samaccounttype" {
        // SAM_USER_OBJECT, SAM_MACHINE_ACCOUNT, and the security and distribution group types.
        return match value.as_str() {
            "805306368" => Kinds::ACCOUNTS,
            "805306369" => Kinds::COMPUTERS,
            "268435456" | "268435457" | "536870912" | "536870913" => Kinds::GROUPS,
            _ => Kinds::OTHER,
        };
    }
    // An objectCategory may be the class's full DN: its first RDN names it.
    let name = value.strip_prefix("cn=").map_or(value.as_str(), |rest| {
        rest.split(',').next().unwrap_or(rest)
    });
    match name {
        "user"
        | "person"
        | "organizationalperson"
        | "inetorgperson"
        | "posixaccount"
        | "account"
        | "msds-managedserviceaccount"
        | "msds-groupmanagedserviceaccount" => Kinds::ACCOUNTS,
        "computer" => Kinds::COMPUTERS,
        "group" | "groupofnames" | "groupofuniquenames" | "posixgroup" => Kinds::GROUPS,
        _ => Kinds::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::ldap::{Extensible, Substrings};

    fn eq<'a>(attribute: &'a str, value: &'a str) -> LdapFilter<'a> {
        LdapFilter::equality(attribute, value)
    }

    fn has(attribute: &str) -> LdapFilter<'_> {
        LdapFilter::present(attribute)
    }

    fn not(inner: LdapFilter<'_>) -> LdapFilter<'_> {
        LdapFilter::Not(Box::new(inner))
    }

    /// `(attribute=initial*)`.
    fn starts<'a>(attribute: &'a str, initial: &'a str) -> LdapFilter<'a> {
        LdapFilter::Substrings(Substrings {
            attribute: attribute.into(),
            parts: vec![Substring::Initial(initial.as_bytes().into())],
        })
    }

    fn assertion<'a>(attribute: &'a str, value: &'a str) -> Assertion<'a> {
        Assertion {
            attribute: attribute.into(),
            value: value.as_bytes().into(),
        }
    }

    /// `(!(userAccountControl:1.2.840.113556.1.4.803:=2))`: accounts not disabled.
    fn enabled() -> LdapFilter<'static> {
        not(LdapFilter::Extensible(Extensible {
            rule: Some("1.2.840.113556.1.4.803".into()),
            attribute: Some("userAccountControl".into()),
            value: b"2".as_slice().into(),
            dn_attributes: false,
        }))
    }

    #[test]
    fn class_filters_enumerate() {
        assert_eq!(
            enumerates(&eq("objectClass", "user")),
            Some(Kinds::ACCOUNTS)
        );
        assert_eq!(enumerates(&has("objectclass")), Some(Kinds::EVERYTHING));
        assert_eq!(
            enumerates(&eq("sAMAccountType", "805306368")),
            Some(Kinds::ACCOUNTS)
        );
        assert_eq!(
            enumerates(&eq("objectCategory", "person")),
            Some(Kinds::ACCOUNTS)
        );
        let people = LdapFilter::And(vec![
            eq("objectCategory", "person"),
            eq("objectClass", "user"),
            enabled(),
        ]);
        assert_eq!(enumerates(&people), Some(Kinds::ACCOUNTS));
        assert_eq!(
            enumerates(&eq(
                "objectCategory",
                "CN=Computer,CN=Schema,CN=Configuration,DC=corp,DC=local"
            )),
            Some(Kinds::COMPUTERS)
        );
        // SharpHound's collection filter: groups, users and computers at once.
        let sharphound = LdapFilter::Or(vec![
            eq("samaccounttype", "268435456"),
            eq("samaccounttype", "805306368"),
            eq("objectclass", "computer"),
        ]);
        assert_eq!(
            enumerates(&sharphound),
            Some(Kinds::ACCOUNTS.union(Kinds::GROUPS).union(Kinds::COMPUTERS))
        );
        let kerberoast = LdapFilter::And(vec![
            eq("samAccountType", "805306368"),
            has("servicePrincipalName"),
        ]);
        assert_eq!(
            enumerates(&kerberoast),
            Some(Kinds::ACCOUNTS.union(Kinds::COMPUTERS))
        );
        assert_eq!(
            enumerates(&eq("objectClass", "organizationalUnit")),
            Some(Kinds::OTHER)
        );
        // A substring match with no content asks only for presence, as `(cn=*)` does.
        assert_eq!(
            enumerates(&LdapFilter::Substrings(Substrings {
                attribute: "objectClass".into(),
                parts: Vec::new(),
            })),
            Some(Kinds::EVERYTHING)
        );
    }

    #[test]
    fn lookups_do_not_enumerate() {
        assert_eq!(enumerates(&eq("sAMAccountName", "alice")), None);
        let user_alice = LdapFilter::And(vec![
            eq("objectClass", "user"),
            eq("sAMAccountName", "alice"),
        ]);
        assert_eq!(enumerates(&user_alice), None);
        let bobs = LdapFilter::And(vec![has("objectclass"), starts("cn", "Bob")]);
        assert_eq!(enumerates(&bobs), None);
        let two = LdapFilter::Or(vec![eq("cn", "alice"), eq("cn", "bob")]);
        assert_eq!(enumerates(&two), None);
        assert_eq!(
            enumerates(&LdapFilter::Approx(assertion("objectClass", "user"))),
            None
        );
        // A class value that only looks like a wildcard (an escaped `*` on the wire).
        assert_eq!(enumerates(&eq("objectClass", "us*er")), Some(Kinds::OTHER));
        // Neither classes nor identities: not counted as enumeration either.
        assert_eq!(
            enumerates(&LdapFilter::GreaterOrEqual(assertion(
                "uSNChanged",
                "12345"
            ))),
            None
        );
        assert_eq!(enumerates(&not(eq("cn", "alice"))), None);
        assert_eq!(enumerates(&enabled()), None);
    }

    #[test]
    fn unreadable_or_overdeep_filters_are_not_guessed_at() {
        assert_eq!(enumerates(&eq("", "user")), None);
        assert_eq!(
            enumerates(&LdapFilter::And(vec![has("objectClass"), has("")])),
            None
        );
        // Deeper than the core ever hands on: built by hand, refused, not recursed into.
        let mut deep = has("objectClass");
        for _ in 0..MAX_FILTER_DEPTH {
            deep = not(deep);
        }
        assert_eq!(enumerates(&deep), None);
        let mut deepest_class = has("objectClass");
        for _ in 0..MAX_FILTER_DEPTH {
            deepest_class = LdapFilter::Or(vec![deepest_class]);
        }
        assert_eq!(enumerates(&deepest_class), None);
        let LdapFilter::Or(mut below) = deepest_class else {
            unreachable!()
        };
        assert_eq!(
            enumerates(&below.pop().expect("one part")),
            Some(Kinds::EVERYTHING)
        );
    }

    #[test]
    fn domain_roots() {
        assert!(is_domain_root("dc=corp,dc=local"));
        assert!(is_domain_root("DC=corp, DC=local"));
        assert!(is_domain_root(""));
        assert!(!is_domain_root("ou=Staff,dc=corp,dc=local"));
        assert!(!is_domain_root("cn=Alice Smith,ou=Staff,dc=corp,dc=local"));
        assert!(!is_domain_root("dc="));
    }
}
