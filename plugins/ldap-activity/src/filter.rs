//! Which LDAP search filters enumerate: a filter that names no particular object, only a class
//! of them (`(objectClass=user)`, `(&(objectCategory=person)(objectClass=user))`,
//! `(sAMAccountType=805306368)`, `(objectClass=*)`), returns every object of that class under
//! the search base. A lookup names what it wants (`(sAMAccountName=alice)`, `(cn=Bob*)`).
//!
//! Filters arrive as RFC 4515 text, as the analyzer renders them: special characters in values
//! are escaped (`\2a`), so an unescaped `*` is a wildcard.

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
/// Nesting is bounded as in the analyzer, so hostile input cannot recurse deeply.
const MAX_DEPTH: usize = 32;

/// The kinds of object `filter` lists when it enumerates, `None` when it looks particular
/// objects up or does not parse (unreadable filters are not guessed at).
pub fn enumerates(filter: &str) -> Option<Kinds> {
    let mut parser = Parser {
        rest: filter.trim(),
    };
    let reach = parser.filter(0)?;
    if !parser.rest.is_empty() {
        return None;
    }
    match reach {
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

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn filter(&mut self, depth: usize) -> Option<Reach> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.rest = self.rest.strip_prefix('(')?;
        let reach = if let Some(rest) = self.rest.strip_prefix('&') {
            self.rest = rest;
            let parts = self.list(depth)?;
            and(&parts)
        } else if let Some(rest) = self.rest.strip_prefix('|') {
            self.rest = rest;
            let parts = self.list(depth)?;
            or(&parts)
        } else if let Some(rest) = self.rest.strip_prefix('!') {
            self.rest = rest;
            self.filter(depth + 1)?;
            // "Everything except X" narrows nothing by itself.
            Reach::Neutral
        } else {
            // Values escape parentheses, so an item runs to the next `)`.
            let end = self.rest.find(')')?;
            let item = &self.rest[..end];
            self.rest = &self.rest[end..];
            self::item(item)?
        };
        self.rest = self.rest.strip_prefix(')')?;
        Some(reach)
    }

    fn list(&mut self, depth: usize) -> Option<Vec<Reach>> {
        let mut parts = Vec::new();
        while self.rest.starts_with('(') {
            parts.push(self.filter(depth + 1)?);
        }
        Some(parts)
    }
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

fn item(item: &str) -> Option<Reach> {
    let (left, value) = item.split_once('=')?;
    let attribute = left.trim_end_matches(['~', '>', '<', ':']);
    if attribute.is_empty() && !left.ends_with(':') {
        return None;
    }
    if left.ends_with(['>', '<']) || left.ends_with(':') || left.contains(':') {
        // Ranges (`pwdLastSet<=...`) and extensible matches (`userAccountControl:1.2.840.
        // 113556.1.4.803:=2`) select by a property many objects share.
        return Some(Reach::Neutral);
    }
    let attribute = attribute.to_ascii_lowercase();
    let is_class = CLASS_ATTRIBUTES.contains(&attribute.as_str());
    if value == "*" {
        // Every object that has the attribute at all.
        let kinds = if is_class {
            Kinds::EVERYTHING
        } else if attribute == "serviceprincipalname" {
            Kinds::ACCOUNTS.union(Kinds::COMPUTERS)
        } else {
            Kinds::OTHER
        };
        return Some(Reach::Class(kinds));
    }
    if !is_class || left.ends_with('~') || value.contains('*') {
        return Some(Reach::Selective);
    }
    Some(Reach::Class(class_kinds(&attribute, value)))
}

/// What a class value stands for: `user`, `CN=Person,CN=Schema,...`, `805306368`.
fn class_kinds(attribute: &str, value: &str) -> Kinds {
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

    #[test]
    fn class_filters_enumerate() {
        assert_eq!(enumerates("(objectClass=user)"), Some(Kinds::ACCOUNTS));
        assert_eq!(enumerates("(objectclass=*)"), Some(Kinds::EVERYTHING));
        assert_eq!(
            enumerates("(sAMAccountType=805306368)"),
            Some(Kinds::ACCOUNTS)
        );
        assert_eq!(enumerates("(objectCategory=person)"), Some(Kinds::ACCOUNTS));
        assert_eq!(
            enumerates("(&(objectCategory=person)(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))"),
            Some(Kinds::ACCOUNTS)
        );
        assert_eq!(
            enumerates("(objectCategory=CN=Computer,CN=Schema,CN=Configuration,DC=corp,DC=local)"),
            Some(Kinds::COMPUTERS)
        );
        // SharpHound's collection filter: groups, users and computers at once.
        assert_eq!(
            enumerates(
                "(|(samaccounttype=268435456)(samaccounttype=805306368)(objectclass=computer))"
            ),
            Some(Kinds::ACCOUNTS.union(Kinds::GROUPS).union(Kinds::COMPUTERS))
        );
        assert_eq!(
            enumerates("(&(samAccountType=805306368)(servicePrincipalName=*))"),
            Some(Kinds::ACCOUNTS.union(Kinds::COMPUTERS))
        );
        assert_eq!(
            enumerates("(objectClass=organizationalUnit)"),
            Some(Kinds::OTHER)
        );
    }

    #[test]
    fn lookups_do_not_enumerate() {
        assert_eq!(enumerates("(sAMAccountName=alice)"), None);
        assert_eq!(
            enumerates("(&(objectClass=user)(sAMAccountName=alice))"),
            None
        );
        assert_eq!(enumerates("(&(objectclass=*)(cn=Bob*))"), None);
        assert_eq!(enumerates("(|(cn=alice)(cn=bob))"), None);
        assert_eq!(enumerates("(objectClass~=user)"), None);
        // Neither classes nor identities: not counted as enumeration either.
        assert_eq!(enumerates("(uSNChanged>=12345)"), None);
        assert_eq!(enumerates("(!(cn=alice))"), None);
    }

    #[test]
    fn broken_filters_are_not_guessed_at() {
        assert_eq!(enumerates(""), None);
        assert_eq!(enumerates("objectClass=user"), None);
        assert_eq!(enumerates("(objectClass=user"), None);
        assert_eq!(enumerates("(objectClass=user))"), None);
        assert_eq!(enumerates("(=user)"), None);
        assert_eq!(enumerates(&"(&".repeat(100)), None);
        assert_eq!(
            enumerates(&format!(
                "{}(objectClass=*){}",
                "(!".repeat(40),
                ")".repeat(40)
            )),
            None
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
