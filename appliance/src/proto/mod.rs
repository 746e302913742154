//! Application protocols, one module each, as zero-copy views over complete messages (the
//! stream layer below cuts TCP streams into messages).

pub mod dcerpc;
pub mod dhcp;
pub mod dns;
pub mod http;
pub mod kerberos;
pub mod ldap;
pub mod local_names;
pub mod nbns;
pub mod ntlm;
pub mod rdp;
pub mod smb1;
pub mod smb2;
