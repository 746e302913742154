//! Accounts as logins name them. `CORP\alice`, `corp\Alice` and a user field of `CORP\alice`
//! with an empty domain field are one credential; Windows compares both parts without regard to
//! case, so a model that keys anything on an account must too.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

/// A credential: domain (upper case) and user name (lower case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Account {
    pub domain: String,
    pub user: String,
}

impl Account {
    /// The account a login's domain and user fields name (NTLM AUTHENTICATE, LDAP, Kerberos).
    /// When the domain field is empty and the user field carries its own (`CORP\alice`, or the
    /// UPN `alice@corp.local`, whose realm then stands for the domain), that one is used.
    pub fn new(domain: &str, user: &str) -> Account {
        let (domain, user) = match (domain.trim(), user.trim()) {
            ("", user) => {
                if let Some((domain, name)) = user.split_once('\\') {
                    (domain, name)
                } else if let Some((name, realm)) = user.rsplit_once('@') {
                    (realm, name)
                } else {
                    ("", user)
                }
            }
            pair => pair,
        };
        Account {
            domain: domain.to_uppercase(),
            user: user.to_lowercase(),
        }
    }

    /// No user name: an anonymous (NULL session) login names nobody.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
    }
}

impl fmt::Display for Account {
    /// `DOMAIN\user`, or the bare user name when no domain was given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.user)
        } else {
            write!(f, "{}\\{}", self.domain, self.user)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn spellings_of_one_credential_are_one_account() {
        let plain = Account::new("CORP", "alice");
        assert_eq!(Account::new("corp", "Alice"), plain);
        assert_eq!(Account::new("", "CORP\\ALICE"), plain);
        assert_eq!(Account::new(" CORP ", "alice "), plain);
        assert_eq!(plain.to_string(), "CORP\\alice");
        let upn = Account::new("", "alice@corp.local");
        assert_eq!(upn.to_string(), "CORP.LOCAL\\alice");
        assert_eq!(Account::new("", "alice").to_string(), "alice");
        assert!(Account::new("CORP", "").is_anonymous());
        assert!(!plain.is_anonymous());
    }
}
