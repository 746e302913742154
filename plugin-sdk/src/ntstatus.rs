//! NTSTATUS codes (MS-ERREF 2.3) that SMB and NTLM logins answer with: the name an analyst
//! knows (as Wireshark and Zeek print it) and what it says about the login. One table, read by
//! the core's protocol logs and by the plugins, so a code has one name everywhere.

use core::fmt;

pub const SUCCESS: u32 = 0x0000_0000;
pub const MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
pub const ACCESS_DENIED: u32 = 0xC000_0022;
pub const NO_SUCH_USER: u32 = 0xC000_0064;
pub const WRONG_PASSWORD: u32 = 0xC000_006A;
pub const LOGON_FAILURE: u32 = 0xC000_006D;
pub const ACCOUNT_RESTRICTION: u32 = 0xC000_006E;
pub const INVALID_LOGON_HOURS: u32 = 0xC000_006F;
pub const INVALID_WORKSTATION: u32 = 0xC000_0070;
pub const PASSWORD_EXPIRED: u32 = 0xC000_0071;
pub const ACCOUNT_DISABLED: u32 = 0xC000_0072;
pub const BAD_NETWORK_NAME: u32 = 0xC000_00CC;
pub const ACCOUNT_EXPIRED: u32 = 0xC000_0193;
pub const PASSWORD_MUST_CHANGE: u32 = 0xC000_0224;
pub const ACCOUNT_LOCKED_OUT: u32 = 0xC000_0234;

/// Each known code with its name (checked against tshark 4.0's value strings) and meaning.
const KNOWN: &[(u32, &str, &str)] = &[
    (SUCCESS, "STATUS_SUCCESS", "success"),
    (
        MORE_PROCESSING_REQUIRED,
        "STATUS_MORE_PROCESSING_REQUIRED",
        "the login continues (the server's NTLM challenge)",
    ),
    (ACCESS_DENIED, "STATUS_ACCESS_DENIED", "access denied"),
    (NO_SUCH_USER, "STATUS_NO_SUCH_USER", "no such account"),
    (WRONG_PASSWORD, "STATUS_WRONG_PASSWORD", "wrong password"),
    (
        LOGON_FAILURE,
        "STATUS_LOGON_FAILURE",
        "unknown account or wrong password",
    ),
    (
        ACCOUNT_RESTRICTION,
        "STATUS_ACCOUNT_RESTRICTION",
        "right password, but the account may not log in this way (e.g. a blank password)",
    ),
    (
        INVALID_LOGON_HOURS,
        "STATUS_INVALID_LOGON_HOURS",
        "right password, outside the account's logon hours",
    ),
    (
        INVALID_WORKSTATION,
        "STATUS_INVALID_WORKSTATION",
        "right password, from a workstation the account may not use",
    ),
    (
        PASSWORD_EXPIRED,
        "STATUS_PASSWORD_EXPIRED",
        "right password, expired",
    ),
    (
        ACCOUNT_DISABLED,
        "STATUS_ACCOUNT_DISABLED",
        "account disabled",
    ),
    (BAD_NETWORK_NAME, "STATUS_BAD_NETWORK_NAME", "no such share"),
    (ACCOUNT_EXPIRED, "STATUS_ACCOUNT_EXPIRED", "account expired"),
    (
        PASSWORD_MUST_CHANGE,
        "STATUS_PASSWORD_MUST_CHANGE",
        "right password, which must be changed at this login",
    ),
    (
        ACCOUNT_LOCKED_OUT,
        "STATUS_ACCOUNT_LOCKED_OUT",
        "account locked out after too many bad passwords",
    ),
];

/// The name of `code` (`STATUS_LOGON_FAILURE`), if it is one this table knows.
pub fn name(code: u32) -> Option<&'static str> {
    KNOWN.iter().find(|k| k.0 == code).map(|k| k.1)
}

/// What `code` says about a login, if it is one this table knows.
pub fn meaning(code: u32) -> Option<&'static str> {
    KNOWN.iter().find(|k| k.0 == code).map(|k| k.2)
}

/// Refusals that mean the password was right (expired, must change, outside logon hours, from a
/// workstation the account may not use): not a failed guess.
pub const PASSWORD_WAS_RIGHT: [u32; 4] = [
    INVALID_LOGON_HOURS,
    INVALID_WORKSTATION,
    PASSWORD_EXPIRED,
    PASSWORD_MUST_CHANGE,
];

/// Shows a code by its name, or as `0xC0000XXX` (MS-ERREF's spelling) when it has none here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtStatus(pub u32);

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match name(self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn codes_show_by_name_or_in_hex() {
        assert_eq!(NtStatus(LOGON_FAILURE).to_string(), "STATUS_LOGON_FAILURE");
        assert_eq!(NtStatus(0xC000_015B).to_string(), "0xC000015B");
        assert_eq!(meaning(WRONG_PASSWORD), Some("wrong password"));
    }

    #[test]
    fn every_code_has_one_name() {
        for (i, (code, name, _)) in KNOWN.iter().enumerate() {
            assert!(name.starts_with("STATUS_"));
            assert!(KNOWN[i + 1..].iter().all(|k| k.0 != *code && k.1 != *name));
        }
    }
}
