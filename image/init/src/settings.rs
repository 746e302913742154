//! `appliance.toml` on the data partition: the operator's network settings, which init applies
//! before it starts the daemon (the daemon's own settings are `vigil.toml` beside it).

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceSettings {
    /// The mirror port to capture on, e.g. `eth0`.
    pub capture: String,
    /// Where the management API is reached; absent: no management address is configured.
    pub management: Option<Management>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Management {
    pub iface: String,
    /// `10.77.0.2/24`.
    pub address: String,
}

pub fn load(path: &Path) -> Result<ApplianceSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("reading {}: {err}", path.display()))?;
    let settings: ApplianceSettings =
        toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    if let Some(management) = &settings.management {
        if management.iface == settings.capture {
            return Err(format!(
                "{}: the management port cannot be the capture port ({}): captured frames never \
                 reach the host's network stack",
                path.display(),
                settings.capture
            ));
        }
        if crate::net::parse_cidr(&management.address).is_none() {
            return Err(format!(
                "{}: management.address {:?} is not ADDRESS/PREFIX",
                path.display(),
                management.address
            ));
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ApplianceSettings, String> {
        let dir = std::env::temp_dir().join(format!("vigil-init-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{}.toml", text.len()));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        load(&path)
    }

    #[test]
    fn reads_capture_and_management_ports() {
        let settings = parse(
            "capture = \"eth0\"\n[management]\niface = \"eth1\"\naddress = \"10.77.0.2/24\"\n",
        )
        .expect("valid");
        assert_eq!(settings.capture, "eth0");
        assert_eq!(settings.management.expect("management").iface, "eth1");
    }

    #[test]
    fn refuses_management_on_the_capture_port_and_bad_addresses() {
        let same =
            "capture = \"eth0\"\n[management]\niface = \"eth0\"\naddress = \"10.0.0.2/24\"\n";
        assert!(parse(same)
            .unwrap_err()
            .contains("cannot be the capture port"));
        let bad = "capture = \"eth0\"\n[management]\niface = \"eth1\"\naddress = \"10.0.0.2\"\n";
        assert!(parse(bad).unwrap_err().contains("ADDRESS/PREFIX"));
        assert!(parse("capture = \"eth0\"\nshell = true\n").is_err());
    }
}
