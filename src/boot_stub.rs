#[derive(Debug, Clone, Copy)]
pub enum DefaultEntry {
    Install,
}
impl std::str::FromStr for DefaultEntry {
    type Err = String;
    fn from_str(_: &str) -> Result<Self, String> {
        Ok(DefaultEntry::Install)
    }
}
